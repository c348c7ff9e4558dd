#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/text_streamer.h"
#include "server/engine/generation_request.h"
#include "server/metrics.h"
#include "server/pipeline/worker_pool.h"

namespace iblip::server {

// The request side of a generation: turns the engine's token ids into text
// (incremental detokenization, stop sequences, finish reasons) and hands
// SequenceDeltas to the transport, on a worker thread. The engine thread only
// appends ids to a queue. Events of one request are processed in order (a
// serial queue on the shared pool).
//
// A stop sequence ends its sequence's text here at once; the request's
// stop_sequence_hits bit tells the engine to stop decoding it (tokens it made
// meanwhile are dropped). Usage counts the tokens up to the stop.
//
// Thread-safety: OnTokens/OnComplete from any thread; the target sink is
// called from the pool only.
class OutputProcessor final
    : public TokenSink,
      public std::enable_shared_from_this<OutputProcessor> {
 public:
  // `tokenizer`, `pool` and `metrics` must outlive every processor (the
  // server owns them). `request` is the one this processor serves.
  static std::shared_ptr<OutputProcessor> Create(
      std::weak_ptr<GenerationRequest> request, const GenerationSettings& settings,
      const model::LmTokenizer& tokenizer, std::shared_ptr<ResponseSink> target,
      WorkerPool& pool, Metrics& metrics);

  void OnTokens(TokenDelta delta) override;
  void OnComplete(const absl::Status& status, const UsageStats& usage) override;

 private:
  OutputProcessor(std::weak_ptr<GenerationRequest> request,
                  const GenerationSettings& settings,
                  const model::LmTokenizer& tokenizer,
                  std::shared_ptr<ResponseSink> target, WorkerPool& pool,
                  Metrics& metrics);

  struct Completion {
    absl::Status status;
    UsageStats usage;
  };
  struct Event {
    std::optional<TokenDelta> tokens;
    std::optional<Completion> completion;
  };
  struct Sequence {
    std::unique_ptr<model::TextStreamer> streamer;
    int accepted_tokens = 0;
    bool finished = false;
  };

  void Enqueue(Event event);
  void Drain();  // on the pool
  void Process(TokenDelta delta);
  void Complete(Completion completion);

  const std::weak_ptr<GenerationRequest> request_;
  const bool beam_search_;
  const int max_new_tokens_;
  const model::LmTokenizer& tokenizer_;
  const std::vector<std::string> stop_sequences_;
  const std::shared_ptr<ResponseSink> target_;
  WorkerPool& pool_;
  Metrics& metrics_;

  Mutex mutex_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mutex_);
  bool draining_ ABSL_GUARDED_BY(mutex_) = false;

  // Pool side only (one Drain at a time).
  std::vector<Sequence> sequences_;
};

}  // namespace iblip::server
