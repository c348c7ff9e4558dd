#include "server/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/runtime/sampler.h"
#include "model/runtime/text_streamer.h"
#include "spdlog/spdlog.h"

namespace iblip::server {

Engine::Engine(model::InstructBlipModel& model,
               const model::LmTokenizer& tokenizer,
               std::vector<int32_t> eos_token_ids, Metrics& metrics,
               Options options)
    : model_(model),
      tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      metrics_(metrics),
      options_(options) {}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The thread is gone: fail whatever it did not start.
  for (auto& queue : queues_) {
    for (auto& request : queue) {
      Complete(*request, absl::UnavailableError("server is shutting down"),
               UsageStats{});
    }
    queue.clear();
  }
}

void Engine::Start() {
  thread_ = std::thread([this] { Loop(); });
}

absl::Status Engine::Admit() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (draining_ || stopping_)
    return absl::UnavailableError("server is shutting down");
  if (admitted_ >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("server is at capacity (", options_.max_queue_size,
                     " requests waiting); retry later"));
  }
  ++admitted_;
  metrics_.SetWaiting(admitted_);
  return absl::OkStatus();
}

void Engine::CancelAdmission() {
  std::lock_guard<std::mutex> lock(mutex_);
  --admitted_;
  metrics_.SetWaiting(admitted_);
  idle_.notify_all();
}

void Engine::Submit(std::shared_ptr<GenerationRequest> request) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queues_[static_cast<int>(request->priority)].push_back(std::move(request));
  }
  wake_.notify_one();
}

void Engine::BeginDrain() {
  std::lock_guard<std::mutex> lock(mutex_);
  draining_ = true;
}

bool Engine::WaitIdle(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [this] { return admitted_ == 0 && !running_; });
}

std::shared_ptr<GenerationRequest> Engine::PopLocked() {
  for (int p = kNumPriorities - 1; p >= 0; --p) {
    if (!queues_[p].empty()) {
      auto request = std::move(queues_[p].front());
      queues_[p].pop_front();
      return request;
    }
  }
  return nullptr;
}

void Engine::Loop() {
  for (;;) {
    std::shared_ptr<GenerationRequest> request;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] {
        return stopping_ ||
               std::any_of(queues_.begin(), queues_.end(),
                           [](const auto& q) { return !q.empty(); });
      });
      if (stopping_) return;
      request = PopLocked();
      --admitted_;
      running_ = true;
      metrics_.SetWaiting(admitted_);
      metrics_.SetRunning(1);
    }
    Run(*request);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = false;
      metrics_.SetRunning(0);
    }
    idle_.notify_all();
  }
}

void Engine::Complete(GenerationRequest& request, const absl::Status& status,
                      const UsageStats& usage) {
  metrics_.RequestFinished(status.code());
  metrics_.ObserveRequestDuration(absl::Now() - request.arrival);
  if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
    spdlog::info("request {} ended: {}", request.request_id, status.ToString());
  }
  request.sink->OnComplete(status, usage);
}

void Engine::Run(GenerationRequest& request) {
  UsageStats usage;
  usage.seed = request.settings.seed;
  usage.prompt_tokens = static_cast<int>(request.prompt_ids.size());
  const absl::Time start = absl::Now();
  usage.queue_time = start - request.arrival;
  metrics_.ObserveQueueTime(usage.queue_time);
  if (request.cancelled.load()) {
    return Complete(request, absl::CancelledError("cancelled by the client"),
                    usage);
  }
  if (start > request.deadline) {
    return Complete(
        request, absl::DeadlineExceededError("deadline exceeded while queued"),
        usage);
  }
  metrics_.AddPromptTokens(usage.prompt_tokens);

  auto image = model_.EncodeImage(request.pixels, request.qformer_ids);
  if (!image.ok()) return Complete(request, image.status(), usage);
  usage.image_tokens = image->num_positions();
  // One prefill; every returned sequence continues from a copy of its state.
  model::SequenceState prompt_state;
  auto first_logits = model_.Prefill(*image, request.prompt_ids, &prompt_state);
  if (!first_logits.ok())
    return Complete(request, first_logits.status(), usage);

  for (int index = 0; index < request.settings.num_return_sequences; ++index) {
    absl::Status status =
        RunSequence(request, prompt_state, *first_logits, index, usage);
    if (!status.ok()) return Complete(request, status, usage);
  }
  usage.total_time = absl::Now() - request.arrival;
  Complete(request, absl::OkStatus(), usage);
}

absl::Status Engine::RunSequence(GenerationRequest& request,
                                 const model::SequenceState& prompt_state,
                                 const std::vector<float>& first_logits,
                                 int index, UsageStats& usage) {
  const GenerationSettings& settings = request.settings;
  model::SamplingParams params = settings.sampling;
  params.eos_token_ids = eos_token_ids_;
  // Sequence i of a request uses seed + i: reproducible, independent samples.
  model::Sampler sampler(params, settings.seed + static_cast<uint64_t>(index));
  model::TextStreamer streamer(tokenizer_, settings.stop_sequences);

  model::SequenceState state = prompt_state;
  std::vector<float> logits = first_logits;
  std::vector<int32_t> generated;
  absl::Time last_token = absl::Now();
  for (int step = 0; step < settings.max_new_tokens; ++step) {
    if (request.cancelled.load())
      return absl::CancelledError("cancelled by the client");
    if (absl::Now() > request.deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("deadline exceeded after ", usage.generated_tokens,
                       " generated tokens"));
    }
    if (step > 0) {
      auto next = model_.Decode(generated.back(), &state);
      if (!next.ok()) return next.status();
      logits = std::move(*next);
    }
    const int32_t token = sampler.Next(logits, generated);
    generated.push_back(token);

    const absl::Time now = absl::Now();
    if (usage.generated_tokens == 0) {
      usage.time_to_first_token = now - request.arrival;
      metrics_.ObserveTimeToFirstToken(usage.time_to_first_token);
    } else if (step > 0) {
      metrics_.ObserveInterTokenLatency(now - last_token);
    }
    last_token = now;
    ++usage.generated_tokens;
    metrics_.AddGeneratedTokens(1);

    SequenceDelta delta;
    delta.index = index;
    delta.token_ids = {token};
    model::TextStreamer::Delta text = streamer.Append(token);
    delta.text = std::move(text.text);
    const bool eos = std::find(eos_token_ids_.begin(), eos_token_ids_.end(),
                               token) != eos_token_ids_.end();
    if (eos) {
      delta.finish_reason = FinishReason::kStop;
    } else if (text.stopped) {
      delta.finish_reason = FinishReason::kStopSequence;
    } else if (step + 1 == settings.max_new_tokens) {
      delta.finish_reason = FinishReason::kLength;
    }
    if (delta.finish_reason == FinishReason::kStop ||
        delta.finish_reason == FinishReason::kLength) {
      delta.text += streamer.Finish();
    }
    delta.elapsed = now - request.arrival;
    const FinishReason reason = delta.finish_reason;
    request.sink->OnDelta(std::move(delta));
    if (reason != FinishReason::kNone) {
      metrics_.SequenceFinished(reason);
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace iblip::server
