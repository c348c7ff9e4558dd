#include "server/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace iblip::server {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
    std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options) {
  ASSIGN_OR_RETURN(auto pool,
                   model.CreateCachePool(options.max_running_sequences,
                                         options.kv_cache_bytes,
                                         options.max_decoder_length));
  return std::unique_ptr<Engine>(new Engine(model, tokenizer,
                                            std::move(eos_token_ids), metrics,
                                            options, std::move(pool)));
}

Engine::Engine(model::InstructBlipModel& model,
               const model::LmTokenizer& tokenizer,
               std::vector<int32_t> eos_token_ids, Metrics& metrics,
               Options options, std::unique_ptr<model::KvCachePool> pool)
    : model_(model),
      tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      metrics_(metrics),
      options_(options),
      pool_(std::move(pool)) {
  free_slots_.store(pool_->free_slots());
  spdlog::info("KV cache: {} sequence slots, {:.1f} MiB", pool_->capacity(),
               pool_->bytes() / 1048576.0);
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The thread is gone: fail whatever did not finish.
  const absl::Status shutting_down =
      absl::UnavailableError("server is shutting down");
  while (!running_.empty()) Retire(running_.begin(), shutting_down);
  for (auto& queue : queues_) {
    for (auto& request : queue) Complete(*request, shutting_down, UsageStats{});
    queue.clear();
  }
}

void Engine::Start() {
  thread_ = std::thread([this] { Loop(); });
}

Engine::DecodeStats Engine::decode_stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  return decode_stats_;
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
  return idle_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] {
    return admitted_ == 0 && running_count_ == 0;
  });
}

void Engine::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] {
        return stopping_ || !running_.empty() ||
               std::any_of(queues_.begin(), queues_.end(),
                           [](const auto& q) { return !q.empty(); });
      });
      if (stopping_) return;
    }
    DropCancelled();
    if (!running_.empty()) DecodeStep();  // decode first
    AdmitWaiting();
    free_slots_.store(pool_->free_slots());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_count_ = static_cast<int>(running_.size());
      metrics_.SetRunning(running_count_);
    }
    idle_.notify_all();
  }
}

void Engine::DropCancelled() {
  const absl::Time now = absl::Now();
  for (auto it = running_.begin(); it != running_.end();) {
    auto next = std::next(it);
    GenerationRequest& request = (*it)->request();
    if (request.cancelled.load()) {
      Retire(it, absl::CancelledError("cancelled by the client"));
    } else if (now > request.deadline) {
      Retire(it, absl::DeadlineExceededError(absl::StrCat(
                     "deadline exceeded after ",
                     (*it)->usage().generated_tokens, " generated tokens")));
    }
    it = next;
  }
}

void Engine::DecodeStep() {
  std::vector<int> slots;
  std::vector<int32_t> tokens;
  std::vector<size_t> counts;  // rows per running request, in order
  for (const auto& active : running_) {
    const size_t before = slots.size();
    active->CollectRows(slots, tokens);
    counts.push_back(slots.size() - before);
  }
  std::vector<absl::Status> failures(running_.size());
  std::vector<std::vector<float>> rows;
  const absl::Time step_start = absl::Now();
  auto logits = model_.DecodeBatch(*pool_, slots, tokens);
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    decode_stats_.seconds += absl::ToDoubleSeconds(absl::Now() - step_start);
    decode_stats_.tokens += static_cast<int64_t>(slots.size());
    ++decode_stats_.steps;
  }
  if (logits.ok()) {
    rows = std::move(*logits);
  } else {
    // Find who fails: decode each request alone, so the others go on.
    spdlog::warn("batched decode failed ({}); retrying request by request",
                 logits.status().ToString());
    size_t offset = 0;
    for (size_t r = 0; r < counts.size(); offset += counts[r], ++r) {
      auto own = model_.DecodeBatch(
          *pool_,
          std::vector<int>(slots.begin() + offset,
                           slots.begin() + offset + counts[r]),
          std::vector<int32_t>(tokens.begin() + offset,
                               tokens.begin() + offset + counts[r]));
      if (own.ok()) {
        rows.insert(rows.end(), own->begin(), own->end());
      } else {
        failures[r] = own.status();
        rows.insert(rows.end(), counts[r], std::vector<float>());
      }
    }
  }
  size_t offset = 0;
  size_t r = 0;
  for (auto& active : running_) {
    if (failures[r].ok() && counts[r] > 0) {
      std::vector<int> to, from;
      for (const auto& [dst, src] :
           active->Consume(std::vector<std::vector<float>>(
               rows.begin() + offset, rows.begin() + offset + counts[r]))) {
        to.push_back(dst);
        from.push_back(src);
      }
      if (!to.empty())
        failures[r] = model_.CopySlots(*pool_, to, from);  // beam reordering
    }
    offset += counts[r];
    ++r;
  }
  r = 0;
  for (auto it = running_.begin(); it != running_.end(); ++r) {
    auto next = std::next(it);
    if (!failures[r].ok()) {
      Retire(it, failures[r]);
    } else {
      for (int slot : (*it)->TakeReleasedSlots()) pool_->Release(slot);
      if ((*it)->finished()) Retire(it, absl::OkStatus());
    }
    it = next;
  }
}

std::shared_ptr<GenerationRequest> Engine::PopAdmissibleLocked(int free_slots) {
  for (int p = kNumPriorities - 1; p >= 0; --p) {
    if (queues_[p].empty()) continue;
    const GenerationSettings& s = queues_[p].front()->settings;
    const int needed = s.num_beams > 1 ? s.num_beams : s.num_return_sequences;
    // Strict priority: a request that does not fit blocks lower priorities.
    if (needed > free_slots && needed <= pool_->capacity()) return nullptr;
    auto request = std::move(queues_[p].front());
    queues_[p].pop_front();
    --admitted_;
    metrics_.SetWaiting(admitted_);
    return request;
  }
  return nullptr;
}

void Engine::AdmitWaiting() {
  int budget = options_.prefill_token_budget;
  bool admitted_any = false;
  while (budget > 0 || !admitted_any) {
    std::shared_ptr<GenerationRequest> request;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      request = PopAdmissibleLocked(pool_->free_slots());
    }
    if (!request) return;
    admitted_any = true;
    budget -= static_cast<int>(request->prompt_ids.size());
    StartRequest(std::move(request));
  }
}

void Engine::StartRequest(std::shared_ptr<GenerationRequest> request) {
  UsageStats usage;
  usage.seed = request->settings.seed;
  usage.prompt_tokens = static_cast<int>(request->prompt_ids.size());
  const absl::Time start = absl::Now();
  usage.queue_time = start - request->arrival;
  metrics_.ObserveQueueTime(usage.queue_time);
  if (request->cancelled.load()) {
    return Complete(*request, absl::CancelledError("cancelled by the client"),
                    usage);
  }
  if (start > request->deadline) {
    return Complete(
        *request, absl::DeadlineExceededError("deadline exceeded while queued"),
        usage);
  }
  auto active = std::make_unique<ActiveRequest>(request, tokenizer_,
                                                eos_token_ids_, metrics_);
  const int needed = active->slots_needed();
  if (needed > pool_->capacity()) {
    return Complete(*request,
                    absl::InvalidArgumentError(absl::StrCat(
                        "parameters.num_beams: needs ", needed,
                        " sequence slots, the server has ", pool_->capacity())),
                    usage);
  }
  metrics_.AddPromptTokens(usage.prompt_tokens);
  auto image = model_.EncodeImage(request->pixels, request->qformer_ids);
  if (!image.ok()) return Complete(*request, image.status(), usage);
  usage.image_tokens = image->num_positions();

  std::vector<int> slots;
  for (int i = 0; i < needed; ++i)
    slots.push_back(*pool_->Allocate());  // PopAdmissible checked
  auto release_all = [&] {
    for (int slot : slots) pool_->Release(slot);
  };
  auto first_logits =
      model_.PrefillSlot(*image, request->prompt_ids, *pool_, slots[0]);
  if (!first_logits.ok()) {
    release_all();
    return Complete(*request, first_logits.status(), usage);
  }
  if (needed > 1) {
    // Every sequence (or beam) continues the same prompt.
    std::vector<int> others(slots.begin() + 1, slots.end());
    if (absl::Status copied = model_.CopySlots(
            *pool_, others, std::vector<int>(others.size(), slots[0]));
        !copied.ok()) {
      release_all();
      return Complete(*request, copied, usage);
    }
  }
  active->Start(slots, *first_logits, usage);
  for (int slot : active->TakeReleasedSlots()) pool_->Release(slot);
  if (active->finished()) {
    UsageStats final_usage = active->usage();
    final_usage.total_time = absl::Now() - request->arrival;
    return Complete(*request, absl::OkStatus(), final_usage);
  }
  running_.push_back(std::move(active));
}

void Engine::ReleaseSlots(ActiveRequest& active) {
  for (int slot : active.TakeReleasedSlots()) pool_->Release(slot);
  for (int slot : active.slots()) pool_->Release(slot);
}

void Engine::Retire(std::list<std::unique_ptr<ActiveRequest>>::iterator it,
                    const absl::Status& status) {
  ReleaseSlots(**it);
  UsageStats usage = (*it)->usage();
  usage.total_time = absl::Now() - (*it)->request().arrival;
  Complete((*it)->request(), status, usage);
  running_.erase(it);
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

}  // namespace iblip::server
