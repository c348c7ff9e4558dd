#include "server/engine/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace iblip::server {
namespace {

// Moving average of a per-unit cost: new samples weigh a quarter.
void Track(absl::Duration& average, absl::Duration sample) {
  average = average == absl::ZeroDuration() ? sample
                                            : (average * 3 + sample) / 4;
}

FinishReason ReasonFor(const absl::Status& status) {
  return status.code() == absl::StatusCode::kCancelled ? FinishReason::kCancelled
                                                       : FinishReason::kError;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    ModelRunner& runner, std::vector<int32_t> eos_token_ids, Metrics& metrics,
    Options options, FeatureCache* cache, const Clock& clock) {
  if (options.kv_block_size < 1) {
    return absl::InvalidArgumentError(
        "scheduler.kv_block_size: must be at least 1");
  }
  const uint64_t block_bytes =
      runner.kv_bytes_per_position() * static_cast<uint64_t>(options.kv_block_size);
  const uint64_t blocks = block_bytes > 0 ? options.kv_cache_bytes / block_bytes : 0;
  if (blocks < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "scheduler.kv_cache_mib: ", options.kv_cache_bytes,
        " bytes do not hold one KV block (", block_bytes, " bytes)"));
  }
  const int num_blocks =
      static_cast<int>(std::min<uint64_t>(blocks, 1u << 30));
  RETURN_IF_ERROR(runner.AllocateKvCache(num_blocks, options.kv_block_size));
  return std::unique_ptr<Engine>(new Engine(runner, std::move(eos_token_ids),
                                            metrics, options, cache, clock,
                                            num_blocks));
}

Engine::Engine(ModelRunner& runner, std::vector<int32_t> eos_token_ids,
               Metrics& metrics, Options options, FeatureCache* cache,
               const Clock& clock, int num_blocks)
    : runner_(runner),
      eos_token_ids_(std::move(eos_token_ids)),
      metrics_(metrics),
      cache_(cache),
      options_(options),
      clock_(clock),
      blocks_(num_blocks, options.kv_block_size),
      scheduler_(
          Scheduler::Options{options.max_running_sequences,
                             options.vision_max_batch_size,
                             options.vision_max_queue_delay,
                             options.max_prefill_chunk,
                             std::min(32, options.max_prefill_chunk),
                             options.decode_interval,
                             options.max_step_stretch_percent},
          blocks_, runner.vision_num_layers(), runner.encoder_decoder()) {
  metrics_.SetKvCacheBlocks(0, blocks_.num_blocks(), blocks_.block_size());
  metrics_.SetQueueCapacity(options_.max_queue_size);
  spdlog::info("KV cache: {} blocks of {} positions ({:.1f} MiB)",
               blocks_.num_blocks(), blocks_.block_size(),
               static_cast<double>(blocks_.num_blocks()) *
                   blocks_.block_size() * runner.kv_bytes_per_position() /
                   1048576.0);
  MutexLock lock(&mutex_);
  last_step_end_ = clock_.Now();
}

Engine::~Engine() {
  {
    MutexLock lock(&mutex_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  // The thread is gone: fail whatever did not finish.
  const absl::Status shutting_down =
      absl::UnavailableError("server is shutting down");
  AcceptNew();
  std::vector<SequenceGroup*> all;
  for (auto& group : groups_) all.push_back(group.get());
  for (SequenceGroup* group : all) Finish(group, shutting_down);
}

void Engine::Start(std::function<void()> bind_thread) {
  thread_ = std::thread([this, bind = std::move(bind_thread)] {
    if (bind) bind();
    Loop();
  });
}

absl::Status Engine::Admit() {
  MutexLock lock(&mutex_);
  if (draining_ || stopping_)
    return absl::UnavailableError("server is shutting down");
  if (waiting_ >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("server is at capacity (", options_.max_queue_size,
                     " requests waiting); retry later"));
  }
  ++waiting_;
  ++unfinished_;
  metrics_.SetWaiting(waiting_);
  return absl::OkStatus();
}

void Engine::CancelAdmission() {
  MutexLock lock(&mutex_);
  --waiting_;
  --unfinished_;
  metrics_.SetWaiting(waiting_);
  idle_.SignalAll();
}

void Engine::Submit(std::shared_ptr<GenerationRequest> request) {
  MutexLock lock(&mutex_);
  if (!work_pending_) {  // the stall clock starts when work reaches it
    last_step_end_ = clock_.Now();
    work_pending_ = true;
  }
  inbox_.push_back(std::move(request));
  wake_.Signal();
}

void Engine::BeginDrain() {
  MutexLock lock(&mutex_);
  draining_ = true;
}

bool Engine::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&mutex_);
  while (unfinished_ != 0) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    idle_.WaitWithTimeout(&mutex_, left);
  }
  return true;
}

Engine::Progress Engine::progress() const {
  MutexLock lock(&mutex_);
  return {last_step_end_, work_pending_};
}

Engine::DecodeStats Engine::decode_stats() const {
  MutexLock lock(&mutex_);
  return decode_stats_;
}

bool Engine::WaitForWork() {
  for (;;) {
    const absl::Time now = clock_.Now();
    const bool runnable = scheduler_.HasRunnableWork(now);
    MutexLock lock(&mutex_);
    work_pending_ = runnable || !inbox_.empty() || !groups_.empty();
    if (stopping_) return false;
    if (runnable || !inbox_.empty()) return true;
    // Nothing to do until a request arrives, or a partial vision batch is
    // due (its queue delay; wall time even under a fake clock: tests use 0).
    const absl::Time due = scheduler_.VisionDue();
    if (due == absl::InfiniteFuture()) {
      wake_.Wait(&mutex_);
    } else {
      wake_.WaitWithTimeout(&mutex_, std::max(absl::ZeroDuration(), due - now));
    }
  }
}

void Engine::Loop() {
  while (WaitForWork()) {
    AcceptNew();
    DropEnded();
    const StepPlan plan = scheduler_.Plan(clock_.Now(), costs_);
    RunStep(plan);
    UpdateGauges();
    MutexLock lock(&mutex_);
    last_step_end_ = clock_.Now();
  }
}

void Engine::AcceptNew() {
  std::deque<std::shared_ptr<GenerationRequest>> arrived;
  {
    MutexLock lock(&mutex_);
    arrived.swap(inbox_);
  }
  for (auto& request : arrived) {
    // The warm-up's metrics go nowhere, so they count what clients sent.
    Metrics& metrics = request->internal ? unrecorded_ : metrics_;
    groups_.push_back(std::make_unique<SequenceGroup>(
        next_group_id_++, std::move(request), eos_token_ids_,
        runner_.encoder_decoder(), options_.decoder_start_token, metrics,
        clock_));
    SequenceGroup* group = groups_.back().get();
    if (group->phase() == SequenceGroup::Phase::kVision) {
      scheduler_.AddToVision(group, clock_.Now());
    } else {
      EnterPrefill(group);
    }
  }
}

void Engine::EnterPrefill(SequenceGroup* group) {
  // Worst case: the prompt once (shared), then every sequence's own blocks
  // for all it may generate, plus one copied block each.
  const int sequences = SequencesNeeded(group->request().settings);
  const int max_new = group->request().settings.max_new_tokens;
  const int worst = blocks_.BlocksFor(group->prompt_positions() + max_new) +
                    (sequences - 1) * (blocks_.BlocksFor(max_new) + 1) +
                    blocks_.BlocksFor(group->encoder_positions());
  if (worst > blocks_.num_blocks()) {
    return Finish(group,
                  absl::InvalidArgumentError(absl::StrCat(
                      "parameters.max_new_tokens: ", sequences,
                      " sequence(s) of up to ",
                      max_new,
                      " new tokens after this prompt need up to ", worst,
                      " KV cache blocks; the server has ",
                      blocks_.num_blocks(),
                      " (lower max_new_tokens, num_beams or "
                      "num_return_sequences)")));
  }
  scheduler_.AddToPrefill(group);
}

absl::Status Engine::Unstartable(const SequenceGroup& group) const {
  const GenerationRequest& request = group.request();
  if (request.cancelled.load())
    return absl::CancelledError("cancelled by the client");
  if (clock_.Now() > request.deadline) {
    const char* stage =
        group.phase() == SequenceGroup::Phase::kVision    ? "queued for the vision stage"
        : group.phase() == SequenceGroup::Phase::kPrefill ? "queued for prefill"
                                                          : "generating";
    return absl::DeadlineExceededError(
        absl::StrCat("deadline exceeded while ", stage, " after ",
                     group.usage().generated_tokens, " generated tokens"));
  }
  return absl::OkStatus();
}

void Engine::DropEnded() {
  std::vector<std::pair<SequenceGroup*, absl::Status>> ended;
  for (auto& group : groups_) {
    if (absl::Status status = Unstartable(*group); !status.ok()) {
      ended.emplace_back(group.get(), std::move(status));
    } else if (group->phase() == SequenceGroup::Phase::kRunning) {
      group->ApplyStopSequenceHits(blocks_);
      if (group->finished()) ended.emplace_back(group.get(), absl::OkStatus());
    }
  }
  for (auto& [group, status] : ended) Finish(group, status);
}

void Engine::RunStep(const StepPlan& plan) {
  for (SequenceGroup* group : plan.preempted) {
    MetricsFor(*group).Preempted();
    spdlog::debug("request {} preempted: KV blocks ran out",
                  group->request().request_id);
  }
  if (!plan.copies.empty()) {
    if (absl::Status copied = runner_.CopyBlocks(plan.copies); !copied.ok()) {
      // The cache is in an unknown state for these groups: fail them.
      for (SequenceGroup* group : plan.decode) Finish(group, copied);
      for (const PrefillPiece& piece : plan.prefills)
        Finish(piece.group, copied);
      return;
    }
  }
  if (!plan.decode.empty()) RunDecode(plan);
  if (!plan.vision.empty()) RunVision(plan.vision);
  for (const PrefillPiece& piece : plan.prefills) {
    if (piece.group->phase() != SequenceGroup::Phase::kFinished)
      RunPrefill(piece);
  }
}

void Engine::RunDecode(const StepPlan& plan) {
  std::vector<DecodeRow> rows;
  std::vector<size_t> counts;  // rows per group, in plan order
  bool recorded = false;
  for (SequenceGroup* group : plan.decode) {
    const size_t before = rows.size();
    for (int s : group->LiveSequences()) rows.push_back(group->Row(s));
    counts.push_back(rows.size() - before);
    recorded = recorded || !group->internal();
  }
  const absl::Time start = clock_.Now();
  auto logits = runner_.Decode(rows);
  const absl::Duration took = clock_.Now() - start;
  Track(costs_.decode_step, took);
  if (recorded) metrics_.ObserveDecodeBatch(static_cast<int>(rows.size()));
  {
    MutexLock lock(&mutex_);
    decode_stats_.seconds += absl::ToDoubleSeconds(took);
    decode_stats_.tokens += static_cast<int64_t>(rows.size());
    ++decode_stats_.steps;
  }
  std::vector<absl::Status> failures(plan.decode.size());
  std::vector<std::vector<float>> all;
  if (logits.ok()) {
    all = std::move(*logits);
  } else {
    // Find who fails: decode each request alone, so the others go on.
    spdlog::warn("batched decode failed ({}); retrying request by request",
                 logits.status().ToString());
    size_t offset = 0;
    for (size_t g = 0; g < counts.size(); offset += counts[g], ++g) {
      auto own = runner_.Decode(std::vector<DecodeRow>(
          rows.begin() + offset, rows.begin() + offset + counts[g]));
      if (own.ok()) {
        for (auto& row : *own) all.push_back(std::move(row));
      } else {
        failures[g] = own.status();
        all.resize(all.size() + counts[g]);
      }
    }
  }
  size_t offset = 0;
  for (size_t g = 0; g < plan.decode.size(); offset += counts[g], ++g) {
    SequenceGroup* group = plan.decode[g];
    if (!failures[g].ok()) {
      Finish(group, failures[g]);
      continue;
    }
    group->Consume(std::vector<std::vector<float>>(
                       std::make_move_iterator(all.begin() + offset),
                       std::make_move_iterator(all.begin() + offset +
                                               counts[g])),
                   blocks_);
    if (group->finished()) Finish(group, absl::OkStatus());
  }
}

void Engine::RunVision(const VisionPiece& piece) {
  const absl::Time start = clock_.Now();
  absl::Status status;
  int images = 0;
  if (piece.begin) {
    vision_groups_ = scheduler_.vision_batch();
    std::vector<const model::PixelValues*> pixels;
    for (SequenceGroup* group : vision_groups_) {
      group->set_taken();
      UsageStats& usage = group->mutable_usage();
      usage.queue_time = start - group->arrival();
      MetricsFor(*group).ObserveQueueTime(usage.queue_time);
      if (group->request().vision.empty())
        pixels.push_back(&group->request().pixels);
    }
    auto activations = runner_.BeginVision(pixels);
    if (activations.ok()) {
      vision_activations_ = std::move(*activations);
    } else {
      status = activations.status();
    }
  }
  for (const SequenceGroup* group : vision_groups_) {
    if (group != nullptr && group->request().vision.empty()) ++images;
  }
  if (status.ok() && piece.layers_end > piece.layers_begin) {
    if (vision_activations_ == nullptr) {
      status = absl::InternalError("vision layers without activations");
    } else {
      status = runner_.RunVisionLayers(*vision_activations_, piece.layers_begin,
                                       piece.layers_end);
    }
    if (status.ok() && images > 0) {
      Track(costs_.vision_layer_per_image,
            (clock_.Now() - start) /
                ((piece.layers_end - piece.layers_begin) * images));
    }
  }
  // The embedding and encoder layers of this piece count towards the batch's
  // vision-stage time (FinishVisionBatch adds the encoder's end and the
  // Q-Former); without this the histogram showed the Q-Former alone.
  vision_compute_ += clock_.Now() - start;
  if (!status.ok() || piece.query) FinishVisionBatch(status);
}

absl::Status Engine::EncodeBatch(const std::vector<SequenceGroup*>& batch,
                                 VisionActivations* activations,
                                 const std::vector<SequenceGroup*>& began) {
  if (activations != nullptr) {
    ASSIGN_OR_RETURN(auto features, runner_.FinishVision(*activations));
    // `began` lists the batch as it started; requests may have left since.
    size_t next = 0;
    for (SequenceGroup* group : began) {
      if (!group->request().vision.empty()) continue;
      model::VisionFeatures& mine = features[next++];
      if (std::find(batch.begin(), batch.end(), group) == batch.end()) continue;
      group->request().vision = mine;
      group->request().pixels = model::PixelValues();
      if (cache_ && !group->internal())
        cache_->PutVision(group->request().image_hash, mine);
    }
  }
  if (batch.empty()) return absl::OkStatus();
  std::vector<model::VisionFeatures> features;
  std::vector<std::vector<int32_t>> qformer_ids;
  for (SequenceGroup* group : batch) {
    features.push_back(group->request().vision);
    qformer_ids.push_back(group->request().qformer_ids);
  }
  const absl::Time start = clock_.Now();
  ASSIGN_OR_RETURN(auto embeddings, runner_.QueryImages(features, qformer_ids));
  Track(costs_.query_per_image,
        (clock_.Now() - start) / static_cast<int64_t>(batch.size()));
  for (size_t i = 0; i < batch.size(); ++i) {
    GenerationRequest& request = batch[i]->request();
    if (cache_ && !batch[i]->internal()) {
      cache_->PutEmbedding(request.image_hash, request.qformer_ids,
                           embeddings[i]);
    }
    request.image = std::move(embeddings[i]);
    request.vision = model::VisionFeatures();
  }
  return absl::OkStatus();
}

absl::Status Engine::EncodeAlone(SequenceGroup* group) {
  std::unique_ptr<VisionActivations> activations;
  if (group->request().vision.empty()) {
    ASSIGN_OR_RETURN(activations,
                     runner_.BeginVision({&group->request().pixels}));
    RETURN_IF_ERROR(runner_.RunVisionLayers(*activations, 0,
                                            runner_.vision_num_layers()));
  }
  return EncodeBatch({group}, activations.get(), {group});
}

void Engine::FinishVisionBatch(const absl::Status& status) {
  const absl::Time start = clock_.Now();
  std::vector<SequenceGroup*> batch = scheduler_.TakeVisionBatch();
  std::unique_ptr<VisionActivations> activations =
      std::move(vision_activations_);
  std::vector<SequenceGroup*> began = std::move(vision_groups_);
  vision_groups_.clear();
  absl::Status result = status;
  if (result.ok()) result = EncodeBatch(batch, activations.get(), began);
  vision_compute_ += clock_.Now() - start;
  std::vector<absl::Status> outcomes(batch.size(), result);
  if (!result.ok() && batch.size() > 1) {
    // Find who fails: run each request's vision stage alone.
    spdlog::warn("batched vision stage failed ({}); retrying one by one",
                 result.ToString());
    for (size_t i = 0; i < batch.size(); ++i)
      outcomes[i] = EncodeAlone(batch[i]);
  }
  bool recorded = false;
  int encoded = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!outcomes[i].ok()) {
      Finish(batch[i], outcomes[i]);
      continue;
    }
    ++encoded;
    recorded = recorded || !batch[i]->internal();
    EnterPrefill(batch[i]);
  }
  // Only requests that were encoded count as batch members.
  if (recorded) metrics_.ObserveVisionBatch(encoded, vision_compute_);
  vision_compute_ = absl::ZeroDuration();
}

void Engine::RunPrefill(const PrefillPiece& piece) {
  SequenceGroup* group = piece.group;
  const absl::Time start = clock_.Now();
  if (!group->taken()) {
    // It skipped the vision stage: its queue time ends here.
    group->set_taken();
    UsageStats& usage = group->mutable_usage();
    usage.queue_time = start - group->arrival();
    MetricsFor(*group).ObserveQueueTime(usage.queue_time);
  }
  PrefillChunk chunk;
  chunk.image = &group->request().image;
  chunk.tokens = &group->prefill_tokens(piece.item.sequence);
  chunk.start = piece.item.start;
  chunk.end = piece.end;
  chunk.table = &group->table(piece.item.sequence);
  if (runner_.encoder_decoder()) {
    chunk.cross_table = &group->cross_table();
    chunk.decoder_tokens = &group->decoder_tokens(piece.item.sequence);
  }
  auto logits = runner_.Prefill(chunk);
  const absl::Duration took = clock_.Now() - start;
  if (!logits.ok()) return Finish(group, logits.status());
  const int positions = runner_.encoder_decoder() && piece.item.start == 0
                            ? group->encoder_positions()
                            : piece.end - piece.item.start;
  Track(costs_.prefill_per_position, took / std::max(1, positions));
  group->add_prefill_time(took);
  group->PrefillDone(piece.item, piece.end, blocks_);
  if (!group->prefill_complete()) return;
  MetricsFor(*group).ObservePrefill(group->prefill_time());
  if (group->needs_first_token()) {
    {
      MutexLock lock(&mutex_);
      --waiting_;
      metrics_.SetWaiting(waiting_);
    }
    MetricsFor(*group).AddPromptTokens(group->usage().prompt_tokens);
    group->Start(std::move(*logits), blocks_);
  } else {
    group->set_phase(SequenceGroup::Phase::kRunning);
  }
  scheduler_.StartRunning(group);
  if (group->finished()) Finish(group, absl::OkStatus());
}

void Engine::Finish(SequenceGroup* group, const absl::Status& status) {
  if (group->phase() == SequenceGroup::Phase::kFinished) return;
  const bool started = !group->needs_first_token();
  if (!status.ok()) group->EndUnfinished(ReasonFor(status));
  group->set_phase(SequenceGroup::Phase::kFinished);
  scheduler_.Remove(group);
  metrics_.SetKvCacheBlocks(blocks_.used_blocks(), blocks_.num_blocks(),
                            blocks_.block_size());
  std::replace(vision_groups_.begin(), vision_groups_.end(), group,
               static_cast<SequenceGroup*>(nullptr));
  vision_groups_.erase(
      std::remove(vision_groups_.begin(), vision_groups_.end(), nullptr),
      vision_groups_.end());
  if (scheduler_.vision_batch().empty() && vision_activations_ != nullptr) {
    vision_activations_.reset();  // nobody is left to use them
    vision_groups_.clear();
  }

  GenerationRequest& request = group->request();
  Metrics& metrics = MetricsFor(*group);
  UsageStats usage = group->usage();
  usage.total_time = clock_.Now() - request.arrival;
  metrics.RequestFinished(status.code());
  metrics.ObserveRequestDuration(usage.total_time);
  spdlog::info(
      "request {} {}: prompt_tokens={} generated_tokens={} queue_ms={:.1f} "
      "ttft_ms={:.1f} total_ms={:.1f} preemptions={}",
      request.request_id, status.ok() ? "ok" : status.ToString(),
      usage.prompt_tokens, usage.generated_tokens,
      absl::ToDoubleMilliseconds(usage.queue_time),
      absl::ToDoubleMilliseconds(usage.time_to_first_token),
      absl::ToDoubleMilliseconds(usage.total_time), usage.preemptions);
  std::shared_ptr<TokenSink> sink = request.sink;
  {
    MutexLock lock(&mutex_);
    if (!started) --waiting_;
    --unfinished_;
    metrics_.SetWaiting(waiting_);
    idle_.SignalAll();
  }
  // Erase before OnComplete: the sink may release the request.
  std::shared_ptr<GenerationRequest> keep;
  for (auto it = groups_.begin(); it != groups_.end(); ++it) {
    if (it->get() == group) {
      pending_delete_.push_back(std::move(*it));
      groups_.erase(it);
      break;
    }
  }
  sink->OnComplete(status, usage);
}

void Engine::UpdateGauges() {
  pending_delete_.clear();  // finished groups, safe to free between steps
  metrics_.SetKvCacheBlocks(blocks_.used_blocks(), blocks_.num_blocks(),
                            blocks_.block_size());
  int running = 0;
  for (const auto& group : groups_) {
    if (group->phase() == SequenceGroup::Phase::kRunning && !group->internal())
      ++running;
  }
  metrics_.SetRunning(running);
}

}  // namespace iblip::server
