#pragma once

#include <array>
#include <deque>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "server/engine/generation_request.h"

namespace iblip::server {

// The engine's scheduling policy, without a model: which requests to run
// through the vision stage now, and which to start decoding. Two stages:
//
//  1. Vision + Q-Former: a dynamic batcher (like Triton's). A batch runs as
//     soon as max_batch_size requests wait, or when the oldest has waited
//     max_queue_delay; higher priorities fill the batch first.
//  2. Decode admission (continuous batching): after every running sequence
//     got its token, encoded requests start in priority order while their
//     KV cache slots are free and the step's prefill token budget lasts (the
//     first one always starts, so a long prompt cannot starve). Strict
//     priority: a request whose slots are not free blocks lower ones.
//
// Not thread-safe: the engine calls it under its lock.
class Scheduler {
 public:
  using RequestPtr = std::shared_ptr<GenerationRequest>;
  struct Options {
    int vision_max_batch_size = 8;
    absl::Duration vision_max_queue_delay = absl::ZeroDuration();
    int prefill_token_budget = 2048;
  };
  explicit Scheduler(Options options) : options_(options) {}

  void AddToVisionQueue(RequestPtr request, absl::Time now);
  // The next vision batch if one is due at `now`, else empty.
  std::vector<RequestPtr> TakeVisionBatch(absl::Time now);
  // When the waiting vision requests become a due batch (InfiniteFuture if
  // none wait; a time <= now if one is due already).
  absl::Time VisionBatchDue() const;

  void AddToPrefillQueue(RequestPtr request);
  // Requests to start this step, given the cache's free and total slots. A
  // request needing more slots than exist is returned too (the engine fails
  // it with a clear error rather than leaving it to block the queue).
  std::vector<RequestPtr> TakePrefills(int free_slots, int total_slots);

  int vision_waiting() const { return vision_count_; }
  int prefill_waiting() const { return prefill_count_; }
  bool empty() const { return vision_count_ == 0 && prefill_count_ == 0; }
  // Everything still queued (shutdown).
  std::vector<RequestPtr> TakeAll();

 private:
  struct Waiting {
    RequestPtr request;
    absl::Time since;
  };
  const Options options_;
  std::array<std::deque<Waiting>, kNumPriorities> vision_;
  std::array<std::deque<RequestPtr>, kNumPriorities> prefill_;
  int vision_count_ = 0;
  int prefill_count_ = 0;
};

}  // namespace iblip::server
