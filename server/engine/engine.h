#pragma once

#include <atomic>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "model/runtime/instructblip_model.h"
#include "model/runtime/lm_tokenizer.h"
#include "server/engine/active_request.h"
#include "server/engine/feature_cache.h"
#include "server/engine/generation_request.h"
#include "server/metrics.h"
#include "server/engine/scheduler.h"

namespace iblip::server {

// Owns the engine thread: the only thread that calls into the model, and the
// owner of the KV cache pool. Every step, in this order:
//  1. decode: all running sequences advance one token in one batched call,
//     across requests and lengths (continuous, iteration-level batching);
//  2. vision: when the dynamic batcher says a batch is due, the vision
//     encoder and the Q-Former run on it (skipping what the feature cache
//     had) and the results go to the cache and the prefill queue;
//  3. prefill: encoded requests start while KV slots are free and the step's
//     prefill token budget lasts.
// Finished and cancelled sequences leave between steps. The policy lives in
// Scheduler (pure, unit-tested); this class runs it.
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
    int vision_max_batch_size = 8;    // images per vision-stage batch
    // How long a partial vision batch may wait for more requests.
    absl::Duration vision_max_queue_delay = absl::ZeroDuration();
  };

  // `model`, `tokenizer`, `metrics` and `cache` must outlive the engine;
  // `cache` may be null (nothing is cached).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
      std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options,
      FeatureCache* cache = nullptr);
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
  // Queues an admitted, preprocessed request (to the vision stage, or
  // straight to prefill when `request->image` came from the cache).
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

  // For liveness (the health service's stall check): when the engine thread
  // last finished a loop iteration, and whether work was waiting for it
  // then. Work arriving at an idle engine restarts the clock, so an engine
  // idle for hours is not stalled the moment a request comes. Any thread.
  struct Progress {
    absl::Time last_step_end;
    bool work_pending = false;
  };
  Progress progress() const;

 private:
  using RequestPtr = std::shared_ptr<GenerationRequest>;
  Engine(model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
         std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options,
         FeatureCache* cache, std::unique_ptr<model::KvCachePool> pool);
  void Loop();
  // Sleeps until there is work: running sequences, requests to prefill, a
  // due vision batch, or stopping. Returns false when stopping.
  bool WaitForWork();
  void DecodeStep();
  void RunVisionStage();
  // Vision encoder (for those without cached features) + Q-Former.
  absl::Status EncodeImages(const std::vector<RequestPtr>& batch);
  void AdmitWaiting();
  void StartRequest(RequestPtr request);
  // Why a queued request cannot go on (cancelled, past its deadline).
  static absl::Status Unstartable(const GenerationRequest& request,
                                  absl::string_view stage);
  // A queued request left the queue without starting.
  void DropQueued(GenerationRequest& request, const absl::Status& status);
  void LeaveQueue();
  Metrics& RequestMetrics(const GenerationRequest& request) {
    return request.internal ? unrecorded_ : metrics_;
  }
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
  Metrics unrecorded_;         // per-request metrics of internal requests
  FeatureCache* const cache_;  // may be null
  const Options options_;

  // Engine thread only.
  std::unique_ptr<model::KvCachePool> pool_;
  std::list<std::unique_ptr<ActiveRequest>> running_;

  std::mutex mutex_;
  std::condition_variable wake_;  // work arrived or stopping
  std::condition_variable idle_;  // a request finished
  // Guarded by mutex_:
  Scheduler scheduler_;
  int admitted_ = 0;  // reserved places: being preprocessed or queued
  int running_count_ = 0;
  bool draining_ = false;
  bool stopping_ = false;

  std::atomic<int> free_slots_{0};  // written by the engine thread
  // progress(): written with mutex_ held (time first), read without it.
  std::atomic<int64_t> last_step_end_ns_{0};
  std::atomic<bool> work_pending_{false};
  mutable std::mutex stats_mutex_;
  DecodeStats decode_stats_;  // guarded by stats_mutex_
  std::thread thread_;        // started by Start(), joined by the destructor
};

}  // namespace iblip::server
