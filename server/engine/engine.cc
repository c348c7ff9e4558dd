#include "server/engine/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace iblip::server {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    model::InstructBlipModel& model, const model::LmTokenizer& tokenizer,
    std::vector<int32_t> eos_token_ids, Metrics& metrics, Options options,
    FeatureCache* cache) {
  ASSIGN_OR_RETURN(auto pool,
                   model.CreateCachePool(options.max_running_sequences,
                                         options.kv_cache_bytes,
                                         options.max_decoder_length));
  return std::unique_ptr<Engine>(new Engine(model, tokenizer,
                                            std::move(eos_token_ids), metrics,
                                            options, cache, std::move(pool)));
}

Engine::Engine(model::InstructBlipModel& model,
               const model::LmTokenizer& tokenizer,
               std::vector<int32_t> eos_token_ids, Metrics& metrics,
               Options options, FeatureCache* cache,
               std::unique_ptr<model::KvCachePool> pool)
    : model_(model),
      tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      metrics_(metrics),
      cache_(cache),
      options_(options),
      pool_(std::move(pool)),
      scheduler_({options.vision_max_batch_size, options.vision_max_queue_delay,
                  options.prefill_token_budget}) {
  free_slots_.store(pool_->free_slots());
  last_step_end_ns_.store(absl::ToUnixNanos(absl::Now()));
  metrics_.SetKvCacheSlots(0, pool_->capacity());
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
  for (auto& request : scheduler_.TakeAll())
    Complete(*request, shutting_down, UsageStats{});
}

void Engine::Start() {
  thread_ = std::thread([this] { Loop(); });
}

Engine::Progress Engine::progress() const {
  // Pending first: a stale time with fresh pending cannot be read (the
  // writers store the time first), only the other way round, which errs
  // towards healthy.
  const bool pending = work_pending_.load();
  return {absl::FromUnixNanos(last_step_end_ns_.load()), pending};
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

void Engine::Submit(RequestPtr request) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!work_pending_.load()) {  // the stall clock starts now
      last_step_end_ns_.store(absl::ToUnixNanos(absl::Now()));
      work_pending_.store(true);
    }
    if (request->image.empty()) {
      scheduler_.AddToVisionQueue(std::move(request), absl::Now());
    } else {
      scheduler_.AddToPrefillQueue(std::move(request));
    }
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

bool Engine::WaitForWork() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (stopping_) return false;
    const absl::Time due = scheduler_.VisionBatchDue();
    if (!running_.empty() || scheduler_.prefill_waiting() > 0 ||
        due <= absl::Now()) {
      return true;
    }
    // Woken by Submit (which may change the due time) or the due time.
    if (due == absl::InfiniteFuture()) {
      wake_.wait(lock);
    } else {
      wake_.wait_until(lock, absl::ToChronoTime(due));
    }
  }
}

void Engine::Loop() {
  model_.BindCallingThread();
  while (WaitForWork()) {
    DropCancelled();
    if (!running_.empty()) DecodeStep();  // decode first
    RunVisionStage();
    AdmitWaiting();
    free_slots_.store(pool_->free_slots());
    metrics_.SetKvCacheSlots(pool_->capacity() - pool_->free_slots(),
                             pool_->capacity());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_count_ = static_cast<int>(running_.size());
      metrics_.SetRunning(running_count_);
      last_step_end_ns_.store(absl::ToUnixNanos(absl::Now()));
      work_pending_.store(!running_.empty() || !scheduler_.empty());
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
  metrics_.ObserveDecodeBatch(static_cast<int>(slots.size()));
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

absl::Status Engine::Unstartable(const GenerationRequest& request,
                                 absl::string_view stage) {
  if (request.cancelled.load())
    return absl::CancelledError("cancelled by the client");
  if (absl::Now() > request.deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat("deadline exceeded while queued for the ", stage));
  }
  return absl::OkStatus();
}

void Engine::LeaveQueue() {
  std::lock_guard<std::mutex> lock(mutex_);
  --admitted_;
  metrics_.SetWaiting(admitted_);
}

void Engine::DropQueued(GenerationRequest& request,
                        const absl::Status& status) {
  LeaveQueue();
  UsageStats usage;
  usage.queue_time = absl::Now() - request.arrival;
  Complete(request, status, usage);
}

void Engine::RunVisionStage() {
  std::vector<RequestPtr> batch;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    batch = scheduler_.TakeVisionBatch(absl::Now());
  }
  std::vector<RequestPtr> live;
  for (auto& request : batch) {
    request->scheduled = absl::Now();
    if (absl::Status status = Unstartable(*request, "vision stage");
        !status.ok()) {
      DropQueued(*request, status);
    } else {
      live.push_back(std::move(request));
    }
  }
  if (live.empty()) return;
  const absl::Time start = absl::Now();
  absl::Status status = EncodeImages(live);
  std::vector<RequestPtr> encoded;
  if (status.ok()) {
    encoded = std::move(live);
  } else {
    // Find who fails: encode each request alone, so the others go on.
    spdlog::warn("batched vision stage failed ({}); retrying one by one",
                 status.ToString());
    for (auto& request : live) {
      if (absl::Status own = EncodeImages({request}); own.ok()) {
        encoded.push_back(std::move(request));
      } else {
        DropQueued(*request, own);
      }
    }
  }
  metrics_.ObserveVisionBatch(static_cast<int>(batch.size()),
                              absl::Now() - start);
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& request : encoded)
    scheduler_.AddToPrefillQueue(std::move(request));
}

absl::Status Engine::EncodeImages(const std::vector<RequestPtr>& batch) {
  std::vector<const model::PixelValues*> pixels;
  std::vector<GenerationRequest*> uncached;
  for (const auto& request : batch) {
    if (request->vision.empty()) {
      pixels.push_back(&request->pixels);
      uncached.push_back(request.get());
    }
  }
  ASSIGN_OR_RETURN(auto features, model_.EncodeVision(pixels));
  for (size_t i = 0; i < uncached.size(); ++i) {
    uncached[i]->vision = features[i];
    if (cache_) cache_->PutVision(uncached[i]->image_hash, features[i]);
    uncached[i]->pixels = model::PixelValues();  // no longer needed
  }
  std::vector<model::VisionFeatures> visions;
  std::vector<std::vector<int32_t>> qformer_ids;
  for (const auto& request : batch) {
    visions.push_back(request->vision);
    qformer_ids.push_back(request->qformer_ids);
  }
  ASSIGN_OR_RETURN(auto embeddings, model_.QueryImages(visions, qformer_ids));
  for (size_t i = 0; i < batch.size(); ++i) {
    GenerationRequest& request = *batch[i];
    if (cache_) {
      cache_->PutEmbedding(request.image_hash, request.qformer_ids,
                           embeddings[i]);
    }
    request.image = std::move(embeddings[i]);
    request.vision = model::VisionFeatures();
  }
  return absl::OkStatus();
}

void Engine::AdmitWaiting() {
  std::vector<RequestPtr> starting;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    starting = scheduler_.TakePrefills(pool_->free_slots(), pool_->capacity());
    // They move from waiting to running in one step, so WaitIdle (drain)
    // never sees neither while they prefill; the loop's end recounts.
    admitted_ -= static_cast<int>(starting.size());
    running_count_ += static_cast<int>(starting.size());
    metrics_.SetWaiting(admitted_);
  }
  for (auto& request : starting) StartRequest(std::move(request));
}

void Engine::StartRequest(RequestPtr request) {
  UsageStats usage;
  usage.seed = request->settings.seed;
  usage.prompt_tokens = static_cast<int>(request->prompt_ids.size());
  const absl::Time start = absl::Now();
  if (request->scheduled == absl::InfinitePast()) request->scheduled = start;
  usage.queue_time = request->scheduled - request->arrival;
  Metrics& metrics = RequestMetrics(*request);
  metrics.ObserveQueueTime(usage.queue_time);
  if (absl::Status status = Unstartable(*request, "language model");
      !status.ok()) {
    return Complete(*request, status, usage);
  }
  auto active = std::make_unique<ActiveRequest>(request, tokenizer_,
                                                eos_token_ids_, metrics);
  const int needed = active->slots_needed();
  if (needed > pool_->capacity()) {
    return Complete(*request,
                    absl::InvalidArgumentError(absl::StrCat(
                        "parameters.num_beams: needs ", needed,
                        " sequence slots, the server has ", pool_->capacity())),
                    usage);
  }
  metrics.AddPromptTokens(usage.prompt_tokens);
  const model::ImageEmbedding& image = request->image;
  usage.image_tokens = image.num_positions();

  std::vector<int> slots;
  for (int i = 0; i < needed; ++i)
    slots.push_back(*pool_->Allocate());  // PopAdmissible checked
  auto release_all = [&] {
    for (int slot : slots) pool_->Release(slot);
  };
  auto first_logits =
      model_.PrefillSlot(image, request->prompt_ids, *pool_, slots[0]);
  metrics.ObservePrefill(absl::Now() - start);
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
  Metrics& metrics = RequestMetrics(request);
  metrics.RequestFinished(status.code());
  metrics.ObserveRequestDuration(absl::Now() - request.arrival);
  if (usage.prompt_tokens > 0)  // it started
    metrics.ObserveRequestTokens(usage.prompt_tokens, usage.generated_tokens);
  // One access-log line per request, with its id for tracing.
  spdlog::info(
      "request {} {}: prompt_tokens={} generated_tokens={} queue_ms={:.1f} "
      "ttft_ms={:.1f} total_ms={:.1f}",
      request.request_id, status.ok() ? "ok" : status.ToString(),
      usage.prompt_tokens, usage.generated_tokens,
      absl::ToDoubleMilliseconds(usage.queue_time),
      absl::ToDoubleMilliseconds(usage.time_to_first_token),
      absl::ToDoubleMilliseconds(absl::Now() - request.arrival));
  request.sink->OnComplete(status, usage);
}

}  // namespace iblip::server
