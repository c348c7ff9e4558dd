#pragma once

#include <array>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "model/runtime/instructblip_model.h"
#include "model/runtime/lm_tokenizer.h"
#include "server/generation_request.h"
#include "server/metrics.h"

namespace iblip::server {

// Owns the engine thread: the only thread that calls into the model. Takes
// preprocessed requests from a bounded, priority-ordered queue and streams
// their tokens to each request's sink.
//
// This version runs one request at a time (its sequences one after another);
// the scheduler with continuous batching replaces Run() without changing
// this interface.
//
// Thread-safety: Admit/Submit/CancelAdmission/BeginDrain/WaitIdle may be
// called from any thread and never block on the model.
class Engine {
 public:
  struct Options {
    int max_queue_size = 256;  // admitted requests not yet started
  };

  // `model`, `tokenizer` and `metrics` must outlive the engine.
  Engine(model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
         std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options);
  // Stops the thread; requests still queued fail with UNAVAILABLE.
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

 private:
  void Loop();
  std::shared_ptr<GenerationRequest> PopLocked();
  void Run(GenerationRequest& request);
  // Generates sequence `index`; returns its status (non-OK ends the request).
  absl::Status RunSequence(GenerationRequest& request,
                           const model::SequenceState& prompt_state,
                           const std::vector<float>& first_logits, int index,
                           UsageStats& usage);
  void Complete(GenerationRequest& request, const absl::Status& status,
                const UsageStats& usage);

  // Constant after construction.
  model::InstructBlipModel& model_;
  const model::LmTokenizer& tokenizer_;
  const std::vector<int32_t> eos_token_ids_;
  Metrics& metrics_;
  const Options options_;

  std::mutex mutex_;
  std::condition_variable wake_;  // work arrived or stopping
  std::condition_variable idle_;  // a request finished
  // Guarded by mutex_:
  std::array<std::deque<std::shared_ptr<GenerationRequest>>, kNumPriorities>
      queues_;
  int admitted_ = 0;  // reserved places: being preprocessed or queued
  bool running_ = false;
  bool draining_ = false;
  bool stopping_ = false;

  std::thread thread_;  // started by Start(), joined by the destructor
};

}  // namespace iblip::server
