#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/generation_request.h"
#include "server/http/chat_protocol.h"
#include "server/http/http_message.h"

namespace iblip::server::http {

// The answer to one POST /v1/chat/completions, between the engine and the
// connection: the engine pushes results in (ResponseSink; it never waits),
// the connection pulls HTTP out (PendingReply) when it can write.
//
// Streamed: a header once the first result is in (an error before any token
// is a plain HTTP error instead), then chat.completion.chunk events, then
// the usage event when asked for, and "data: [DONE]". Deltas that arrive
// while the client is slow merge (QueueDelta), so what waits for a slow
// client stays bounded. Not streamed: one chat.completion at the end.
// Cancel (client gone, server stopping) stops the generation; a stream then
// ends with an error event and [DONE].
class ChatReply final : public PendingReply, public ResponseSink {
 public:
  struct Info {
    std::string id;  // "chatcmpl-..."
    std::string model;
    int64_t created = 0;  // Unix seconds
    bool stream = false;
    bool include_usage = false;
  };
  explicit ChatReply(Info info) : info_(std::move(info)) {}

  // The backend's way to stop the generation (a Cancel before this call
  // runs it at once).
  void SetCanceller(std::function<void()> cancel);

  // ResponseSink.
  void OnDelta(SequenceDelta delta) override;
  void OnComplete(const absl::Status& status, const UsageStats& usage) override;

  // PendingReply.
  void SetWaker(std::function<void()> wake) override;
  ReplyPart Next() override;
  void Cancel(const absl::Status& status) override;

 private:
  void WakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (waker_) waker_();
  }
  ReplyPart NextStreamPartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  HttpResponse ErrorLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const Info info_;
  absl::Mutex mutex_;
  std::function<void()> waker_ ABSL_GUARDED_BY(mutex_);
  std::function<void()> cancel_ ABSL_GUARDED_BY(mutex_);
  bool cancel_requested_ ABSL_GUARDED_BY(mutex_) = false;
  // Streamed: results not yet sent. Not streamed: the choices so far.
  std::deque<SequenceDelta> deltas_ ABSL_GUARDED_BY(mutex_);
  std::map<int, ChoiceResult> choices_ ABSL_GUARDED_BY(mutex_);
  bool done_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
  UsageStats usage_ ABSL_GUARDED_BY(mutex_);
  bool head_sent_ ABSL_GUARDED_BY(mutex_) = false;
  bool finished_ ABSL_GUARDED_BY(mutex_) = false;  // the last part is out
  std::set<int> started_ ABSL_GUARDED_BY(mutex_);  // choices with a chunk
};

}  // namespace iblip::server::http
