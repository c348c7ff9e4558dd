#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "model/runtime/instructblip_model.h"
#include "model/runtime/lm_tokenizer.h"
#include "server/active_request.h"
#include "server/generation_request.h"
#include "server/metrics.h"

namespace iblip::server {

// Owns the engine thread: the only thread that calls into the model, and the
// owner of the KV cache pool. Continuous (iteration-level) batching: every
// step first advances all running sequences by one token in one batched
// decode, across requests and lengths, then admits waiting requests
// (priority first) while cache slots are free and the step's prefill token
// budget lasts. Finished and cancelled sequences leave between steps.
//
// Thread-safety: Admit/Submit/CancelAdmission/BeginDrain/WaitIdle may be
// called from any thread and never wait for the model.
class Engine {
 public:
  struct Options {
    int max_queue_size = 256;  // admitted requests not yet started
    int max_running_sequences =
        32;  // KV cache slots (fewer if the budget says so)
    uint64_t kv_cache_bytes = 1ull << 30;
    int max_decoder_length = 1025;    // T5 decoder positions per slot
    int prefill_token_budget = 4096;  // prompt tokens admitted per step
  };

  // `model`, `tokenizer` and `metrics` must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
      std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options);
  // Stops the thread; requests not finished fail with UNAVAILABLE.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void Start();

  // Reserves a queue place before preprocessing, so a full server says no
  // before spending CPU: RESOURCE_EXHAUSTED when full, UNAVAILABLE while
  // draining. Every OK Admit is followed by Submit or CancelAdmission.
  absl::Status Admit();
  void CancelAdmission();
  // Queues an admitted, preprocessed request.
  void Submit(std::shared_ptr<GenerationRequest> request);

  // Refuses new admissions from now on (graceful drain).
  void BeginDrain();
  // Waits until nothing is queued or running, or `timeout` passes; true if
  // idle.
  bool WaitIdle(absl::Duration timeout);

  int cache_capacity() const { return pool_->capacity(); }
  // Free KV cache slots after the last engine step (a snapshot).
  int free_cache_slots() const { return free_slots_.load(); }

  // Cumulative time in batched decode steps and the tokens they produced
  // (prefill excluded): decode-phase throughput for benchmarks.
  struct DecodeStats {
    double seconds = 0;
    int64_t tokens = 0;
    int64_t steps = 0;
  };
  DecodeStats decode_stats() const;

 private:
  Engine(model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
         std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options,
         std::unique_ptr<model::KvCachePool> pool);
  void Loop();
  // One engine iteration; returns false when there was nothing to do.
  void DecodeStep();
  void AdmitWaiting();
  std::shared_ptr<GenerationRequest> PopAdmissibleLocked(int free_slots);
  void StartRequest(std::shared_ptr<GenerationRequest> request);
  void DropCancelled();
  void Retire(std::list<std::unique_ptr<ActiveRequest>>::iterator it,
              const absl::Status& status);
  void ReleaseSlots(ActiveRequest& active);
  void Complete(GenerationRequest& request, const absl::Status& status,
                const UsageStats& usage);

  // Constant after construction.
  model::InstructBlipModel& model_;
  const model::LmTokenizer& tokenizer_;
  const std::vector<int32_t> eos_token_ids_;
  Metrics& metrics_;
  const Options options_;

  // Engine thread only.
  std::unique_ptr<model::KvCachePool> pool_;
  std::list<std::unique_ptr<ActiveRequest>> running_;

  std::mutex mutex_;
  std::condition_variable wake_;  // work arrived or stopping
  std::condition_variable idle_;  // a request finished
  // Guarded by mutex_:
  std::array<std::deque<std::shared_ptr<GenerationRequest>>, kNumPriorities>
      queues_;
  int admitted_ = 0;  // reserved places: being preprocessed or queued
  int running_count_ = 0;
  bool draining_ = false;
  bool stopping_ = false;

  std::atomic<int> free_slots_{0};  // written by the engine thread
  mutable std::mutex stats_mutex_;
  DecodeStats decode_stats_;  // guarded by stats_mutex_
  std::thread thread_;        // started by Start(), joined by the destructor
};

}  // namespace iblip::server
