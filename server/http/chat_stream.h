#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/time/time.h"
#include "server/engine/generation_request.h"

namespace iblip::server::http {

// The engine's results for one HTTP request, handed from the engine thread
// to the connection's thread through a QueueDelta queue (bounded however
// slow the connection is; the engine never waits).
class ChatStream final : public ResponseSink {
 public:
  void OnDelta(SequenceDelta delta) override;
  void OnComplete(const absl::Status& status, const UsageStats& usage) override;

  struct Event {
    std::optional<SequenceDelta> delta;  // else the request ended
    absl::Status status;
    UsageStats usage;
  };
  // The next event, waiting up to `timeout` (nullopt on timeout).
  std::optional<Event> Next(absl::Duration timeout);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<SequenceDelta> deltas_;  // guarded by mutex_
  bool done_ = false;                 // guarded by mutex_
  absl::Status status_;               // guarded by mutex_
  UsageStats usage_;                  // guarded by mutex_
};

}  // namespace iblip::server::http
