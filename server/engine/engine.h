#pragma once

#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "server/engine/clock.h"
#include "server/engine/feature_cache.h"
#include "server/engine/generation_request.h"
#include "server/engine/kv_block_manager.h"
#include "server/engine/model_runner.h"
#include "server/engine/scheduler.h"
#include "server/engine/sequence_group.h"
#include "server/metrics.h"

namespace iblip::server {

// Owns the engine thread: the only thread that calls the model (through a
// ModelRunner) and the owner of the KV block pool. Each step it asks the
// Scheduler for a plan, then runs it: block copies, one batched decode of
// every running sequence, a bounded piece of vision work (a few encoder
// layers, or the Q-Former), prefill chunks. Token ids go to each request's
// TokenSink; the request side turns them into text (the engine thread does
// model work only).
//
// Thread-safety: Admit, CancelAdmission, Submit, BeginDrain, WaitIdle and the
// accessors may be called from any thread and never wait for the model.
class Engine {
 public:
  struct Options {
    int max_queue_size = 256;  // admitted requests not yet started
    int max_running_sequences = 32;
    uint64_t kv_cache_bytes = 1ull << 30;
    int kv_block_size = 16;  // positions per KV block
    int vision_max_batch_size = 8;
    absl::Duration vision_max_queue_delay = absl::ZeroDuration();
    int max_prefill_chunk = 2048;
    absl::Duration decode_interval = absl::Milliseconds(50);
    int max_step_stretch_percent = 200;
    int32_t decoder_start_token = 0;  // T5
  };

  // `runner`, `metrics`, `clock` and `cache` must outlive the engine;
  // `cache` may be null (nothing is cached).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      ModelRunner& runner, std::vector<int32_t> eos_token_ids,
      Metrics& metrics, Options options, FeatureCache* cache = nullptr,
      const Clock& clock = RealClock::Get());
  // Stops the thread; requests not finished fail with UNAVAILABLE.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // `bind_thread` runs first on the engine thread (torch's thread count is
  // per thread).
  void Start(std::function<void()> bind_thread = nullptr);

  // Reserves a queue place before preprocessing, so a full server says no
  // before spending CPU: RESOURCE_EXHAUSTED when full, UNAVAILABLE while
  // draining. Every OK Admit is followed by Submit or CancelAdmission.
  absl::Status Admit();
  void CancelAdmission();
  // Queues an admitted, preprocessed request.
  void Submit(std::shared_ptr<GenerationRequest> request);

  void BeginDrain();
  // Waits until nothing is queued or running, or `timeout` passes; true if
  // idle.
  bool WaitIdle(absl::Duration timeout);

  int kv_blocks() const { return blocks_.num_blocks(); }
  int kv_block_size() const { return blocks_.block_size(); }
  // Positions the pool holds (blocks x block size).
  int64_t kv_capacity_positions() const {
    return int64_t{blocks_.num_blocks()} * blocks_.block_size();
  }
  int max_queue_size() const { return options_.max_queue_size; }

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
  using GroupPtr = std::unique_ptr<SequenceGroup>;
  Engine(ModelRunner& runner, std::vector<int32_t> eos_token_ids,
         Metrics& metrics, Options options, FeatureCache* cache,
         const Clock& clock, int num_blocks);

  void Loop();
  // Sleeps until there is work or stopping. False when stopping.
  bool WaitForWork();
  // New requests from the inbox into the scheduler's queues.
  void AcceptNew();
  // Cancelled, past-deadline and stop-sequence-finished work leaves.
  void DropEnded();
  void RunStep(const StepPlan& plan);
  void RunDecode(const StepPlan& plan);
  void RunVision(const VisionPiece& piece);
  // The vision batch is done (or failed): encoded groups go to prefill.
  void FinishVisionBatch(const absl::Status& status);
  // The encoder's end (if `activations`) and the Q-Former for `batch`.
  absl::Status EncodeBatch(const std::vector<SequenceGroup*>& batch,
                           VisionActivations* activations,
                           const std::vector<SequenceGroup*>& began);
  // The whole vision stage of one request (isolating a failing one).
  absl::Status EncodeAlone(SequenceGroup* group);
  // Checks that the request can ever fit the KV pool, then queues it.
  void EnterPrefill(SequenceGroup* group);
  void RunPrefill(const PrefillPiece& piece);
  void Finish(SequenceGroup* group, const absl::Status& status);
  Metrics& MetricsFor(const SequenceGroup& group) {
    return group.internal() ? unrecorded_ : metrics_;
  }
  void UpdateGauges();
  absl::Status Unstartable(const SequenceGroup& group) const;

  // Constant after construction.
  ModelRunner& runner_;
  const std::vector<int32_t> eos_token_ids_;
  Metrics& metrics_;
  Metrics unrecorded_;         // metrics of internal requests (discarded)
  FeatureCache* const cache_;  // may be null
  const Options options_;
  const Clock& clock_;

  // Engine thread only.
  KvBlockManager blocks_;
  Scheduler scheduler_;
  std::list<GroupPtr> groups_;  // every group the engine holds
  uint64_t next_group_id_ = 1;
  StepCosts costs_;
  // The vision batch in progress: its groups (as when it began) and the
  // encoder's activations between steps.
  std::vector<SequenceGroup*> vision_groups_;
  std::unique_ptr<VisionActivations> vision_activations_;
  absl::Duration vision_compute_;  // the batch's pieces so far
  // Finished groups, freed at the end of the step (plans point at them).
  std::vector<GroupPtr> pending_delete_;

  mutable Mutex mutex_;
  CondVar wake_;  // work arrived or stopping
  CondVar idle_;  // a request finished
  std::deque<std::shared_ptr<GenerationRequest>> inbox_
      ABSL_GUARDED_BY(mutex_);
  // Admitted and not started (preprocessing or queued): what max_queue_size
  // bounds.
  int waiting_ ABSL_GUARDED_BY(mutex_) = 0;
  int unfinished_ ABSL_GUARDED_BY(mutex_) = 0;  // admitted, not completed
  bool draining_ ABSL_GUARDED_BY(mutex_) = false;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Time last_step_end_ ABSL_GUARDED_BY(mutex_);
  bool work_pending_ ABSL_GUARDED_BY(mutex_) = false;
  DecodeStats decode_stats_ ABSL_GUARDED_BY(mutex_);

  std::thread thread_;  // started by Start(), joined by the destructor
};

}  // namespace iblip::server
