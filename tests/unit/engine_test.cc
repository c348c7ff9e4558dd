// The engine on the fake model runner: continuous batching, the paged KV
// cache (sharing, copy on write, preemption), the step planner's bounds,
// cancellation, deadlines, priorities and failure isolation. Torch-free:
// runs in the sanitizer and ThreadSanitizer builds too. Outputs are compared
// with FakeModelRunner's reference generation, which knows nothing of
// blocks or batches, so any bookkeeping mistake changes tokens.
#include "server/engine/engine.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <atomic>
#include <map>
#include <set>

#include "common/mutex.h"
#include "model/runtime/beam_search.h"
#include "model/runtime/sampler.h"
#include "tests/fakes/fake_model_runner.h"

namespace iblip::server {
namespace {

using testing::FakeModelRunner;

constexpr int32_t kEos = 47;  // the fake's vocabulary is 0..47

// Records what the engine reports for one request. Thread-safe.
class RecordingSink final : public TokenSink {
 public:
  void OnTokens(TokenDelta delta) override {
    std::function<void(const TokenDelta&)> hook;
    {
      MutexLock lock(&mutex_);
      deltas_.push_back(delta);
      hook = on_tokens;
      changed_.SignalAll();
    }
    if (hook) hook(delta);
  }
  void OnComplete(const absl::Status& status, const UsageStats& usage) override {
    MutexLock lock(&mutex_);
    ++completions_;
    status_ = status;
    usage_ = usage;
    changed_.SignalAll();
  }
  void Wait() {
    MutexLock lock(&mutex_);
    while (completions_ == 0) changed_.Wait(&mutex_);
  }
  // Blocks until `count` tokens of any sequence arrived (or it ended).
  void WaitForTokens(size_t count) {
    MutexLock lock(&mutex_);
    while (TokenCountLocked() < count && completions_ == 0)
      changed_.Wait(&mutex_);
  }
  std::vector<int32_t> Tokens(int index = 0) const {
    MutexLock lock(&mutex_);
    std::vector<int32_t> ids;
    for (const auto& d : deltas_) {
      if (d.index == index)
        ids.insert(ids.end(), d.token_ids.begin(), d.token_ids.end());
    }
    return ids;
  }
  std::vector<TokenDelta> deltas() const {
    MutexLock lock(&mutex_);
    return deltas_;
  }
  absl::Status status() const {
    MutexLock lock(&mutex_);
    return status_;
  }
  UsageStats usage() const {
    MutexLock lock(&mutex_);
    return usage_;
  }
  int completions() const {
    MutexLock lock(&mutex_);
    return completions_;
  }
  FinishReason LastFinish(int index = 0) const {
    MutexLock lock(&mutex_);
    FinishReason reason = FinishReason::kNone;
    for (const auto& d : deltas_) {
      if (d.index == index && d.finish_reason != FinishReason::kNone)
        reason = d.finish_reason;
    }
    return reason;
  }

  // Set before submitting; called on the engine thread.
  std::function<void(const TokenDelta&)> on_tokens;

 private:
  size_t TokenCountLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    size_t n = 0;
    for (const auto& d : deltas_) n += d.token_ids.size();
    return n;
  }
  mutable Mutex mutex_;
  CondVar changed_;
  std::vector<TokenDelta> deltas_ ABSL_GUARDED_BY(mutex_);
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
  UsageStats usage_ ABSL_GUARDED_BY(mutex_);
  int completions_ ABSL_GUARDED_BY(mutex_) = 0;
};

model::PixelValues Pixels(float value) {
  model::PixelValues pixels;
  pixels.size = 4;
  pixels.chw.assign(3 * 4 * 4, value);
  return pixels;
}

std::shared_ptr<GenerationRequest> MakeRequest(float image, int max_new_tokens,
                                               int prompt_tokens = 6) {
  auto request = std::make_shared<GenerationRequest>();
  request->request_id = "r" + std::to_string(image);
  request->pixels = Pixels(image);
  for (int i = 0; i < prompt_tokens; ++i)
    request->prompt_ids.push_back(3 + (i * 7 + static_cast<int>(image * 10)) % 40);
  request->qformer_ids = {101, 7, 102};
  request->settings.max_new_tokens = max_new_tokens;
  request->settings.seed = 11;
  return request;
}

// The pixels a request was submitted with (the engine drops them once the
// image is encoded).
std::map<const GenerationRequest*, model::PixelValues>& SubmittedPixels() {
  static auto* pixels =
      new std::map<const GenerationRequest*, model::PixelValues>();
  return *pixels;
}

// The engine's output computed without it: greedy (or seeded sampling) on
// the fake's logits over the true history.
std::vector<int32_t> Reference(const FakeModelRunner& runner,
                               const GenerationRequest& request, int sequence = 0) {
  std::vector<int64_t> history = runner.PromptHistory(
      SubmittedPixels().at(&request), request.qformer_ids, request.prompt_ids);
  model::SamplingParams params = request.settings.sampling;
  params.eos_token_ids = {kEos};
  model::Sampler sampler(params, request.settings.seed + sequence);
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < request.settings.max_new_tokens) {
    std::vector<float> logits = runner.Logits(history);
    const int32_t token = sampler.Next(logits, out);
    out.push_back(token);
    history.push_back(token);
    if (token == kEos) break;
  }
  return out;
}

// Beam search on the true histories.
std::vector<std::vector<int32_t>> ReferenceBeams(
    const FakeModelRunner& runner, const GenerationRequest& request) {
  const std::vector<int64_t> prompt = runner.PromptHistory(
      SubmittedPixels().at(&request), request.qformer_ids, request.prompt_ids);
  const GenerationSettings& s = request.settings;
  model::BeamSearchParams params;
  params.num_beams = s.num_beams;
  params.max_new_tokens = s.max_new_tokens;
  params.num_return_sequences = s.num_return_sequences;
  params.length_penalty = s.length_penalty;
  params.eos_token_ids = {kEos};
  model::BeamSearch search(params);
  std::vector<std::vector<int64_t>> beams(s.num_beams, prompt);
  while (!search.done()) {
    std::vector<std::vector<float>> logits;
    for (const auto& beam : beams) logits.push_back(runner.Logits(beam));
    const auto step = search.Advance(logits);
    std::vector<std::vector<int64_t>> next;
    for (size_t i = 0; i < step.tokens.size(); ++i) {
      next.push_back(beams[step.parents[i]]);
      next.back().push_back(step.tokens[i]);
    }
    beams = std::move(next);
  }
  std::vector<std::vector<int32_t>> out;
  for (const auto& h : search.Finalize()) out.push_back(h.tokens);
  return out;
}

double MetricValue(Metrics& metrics, const std::string& name) {
  for (const auto& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      if (family.type == prometheus::MetricType::Histogram)
        return static_cast<double>(metric.histogram.sample_count);
      if (family.type == prometheus::MetricType::Gauge)
        return metric.gauge.value;
      return metric.counter.value;
    }
  }
  return 0;
}

class EngineTest : public ::testing::Test {
 protected:
  void Build(Engine::Options options = {},
             FakeModelRunner::Options runner_options = {}) {
    if (options.kv_cache_bytes == (1ull << 30)) {
      options.kv_cache_bytes = 256 * runner_options.kv_bytes_per_position *
                               static_cast<uint64_t>(options.kv_block_size);
    }
    runner_ = std::make_unique<FakeModelRunner>(runner_options, &clock_);
    auto engine =
        Engine::Create(*runner_, {kEos}, metrics_, options, nullptr, clock_);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    engine_->Start();
  }
  std::shared_ptr<RecordingSink> Submit(
      std::shared_ptr<GenerationRequest> request,
      std::shared_ptr<RecordingSink> sink = nullptr) {
    if (!sink) sink = std::make_shared<RecordingSink>();
    SubmittedPixels()[request.get()] = request->pixels;
    request->sink = sink;
    request->arrival = clock_.Now();
    EXPECT_TRUE(engine_->Admit().ok());
    engine_->Submit(std::move(request));
    return sink;
  }
  std::shared_ptr<RecordingSink> Run(std::shared_ptr<GenerationRequest> r) {
    auto sink = Submit(std::move(r));
    sink->Wait();
    return sink;
  }
  void ExpectAllBlocksFree() {
    ASSERT_TRUE(engine_->WaitIdle(absl::Seconds(30)));
    EXPECT_EQ(MetricValue(metrics_, "iblip_kv_cache_blocks_used"), 0);
  }

  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<FakeModelRunner> runner_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, GreedyMatchesTheReferenceAndReportsUsage) {
  Build();
  auto request = MakeRequest(0.1f, 12);
  auto sink = Run(request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  const std::vector<int32_t> want = Reference(*runner_, *request);
  EXPECT_EQ(sink->Tokens(), want);
  EXPECT_EQ(sink->usage().generated_tokens, static_cast<int>(want.size()));
  EXPECT_EQ(sink->usage().prompt_tokens, 6);
  EXPECT_EQ(sink->usage().image_tokens, 4);
  EXPECT_EQ(sink->completions(), 1);
  EXPECT_EQ(sink->LastFinish(), want.back() == kEos ? FinishReason::kStop
                                                    : FinishReason::kLength);
  ExpectAllBlocksFree();
}

// Continuous batching with blocks: 24 requests of different prompt and
// output lengths at once, each exactly as alone.
TEST_F(EngineTest, ManyConcurrentRequestsEachMatchTheirReference) {
  Engine::Options options;
  options.max_running_sequences = 8;
  Build(options);
  std::vector<std::shared_ptr<GenerationRequest>> requests;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 24; ++i) {
    requests.push_back(MakeRequest(0.01f * (i + 1), 5 + 3 * (i % 7), 3 + i % 20));
    sinks.push_back(Submit(requests.back()));
  }
  for (int i = 0; i < 24; ++i) {
    sinks[i]->Wait();
    ASSERT_TRUE(sinks[i]->status().ok()) << sinks[i]->status();
    EXPECT_EQ(sinks[i]->Tokens(), Reference(*runner_, *requests[i])) << i;
  }
  EXPECT_GT(MetricValue(metrics_, "iblip_decode_batch_size"), 0);
  ExpectAllBlocksFree();
}

// A pool too small for everyone: requests are preempted (blocks freed,
// recomputed later) instead of refused, and still give their tokens.
TEST_F(EngineTest, PreemptionWhenBlocksRunOutKeepsOutputsIdentical) {
  Engine::Options options;
  options.kv_block_size = 4;
  options.max_running_sequences = 16;
  FakeModelRunner::Options runner;
  options.kv_cache_bytes = 24 * 4 * runner.kv_bytes_per_position;  // 24 blocks
  Build(options, runner);
  std::vector<std::shared_ptr<GenerationRequest>> requests;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 6; ++i) {
    requests.push_back(MakeRequest(0.2f + 0.01f * i, 30, 6));
    requests.back()->settings.sampling.min_new_tokens = 30;
    sinks.push_back(Submit(requests.back()));
  }
  for (int i = 0; i < 6; ++i) {
    sinks[i]->Wait();
    ASSERT_TRUE(sinks[i]->status().ok()) << sinks[i]->status();
    requests[i]->settings.sampling.min_new_tokens = 30;
    EXPECT_EQ(sinks[i]->Tokens(), Reference(*runner_, *requests[i])) << i;
  }
  EXPECT_GT(MetricValue(metrics_, "iblip_preemptions_total"), 0);
  ExpectAllBlocksFree();
}

// n > 1 samples share the prompt's blocks; each continues on a private copy
// of the last, partly filled block.
TEST_F(EngineTest, SampledSequencesShareThePromptAndMatchTheirSeeds) {
  Engine::Options options;
  options.kv_block_size = 4;
  Build(options);
  auto request = MakeRequest(0.3f, 10, 7);  // 4 + 7 = 11 prompt positions
  request->settings.num_return_sequences = 3;
  request->settings.sampling.temperature = 1.0f;
  request->settings.sampling.top_k = 0;
  auto sink = Run(request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  for (int s = 0; s < 3; ++s)
    EXPECT_EQ(sink->Tokens(s), Reference(*runner_, *request, s)) << s;
  EXPECT_NE(sink->Tokens(0), sink->Tokens(1));
  ExpectAllBlocksFree();
}

TEST_F(EngineTest, BeamSearchMatchesTheReferenceWithCopyOnWrite) {
  Engine::Options options;
  options.kv_block_size = 4;
  Build(options);
  auto request = MakeRequest(0.4f, 12, 5);
  request->settings.num_beams = 4;
  request->settings.num_return_sequences = 2;
  auto sink = Run(request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  const auto want = ReferenceBeams(*runner_, *request);
  ASSERT_EQ(want.size(), 2u);
  EXPECT_EQ(sink->Tokens(0), want[0]);
  EXPECT_EQ(sink->Tokens(1), want[1]);
  bool copied = false;
  for (const auto& call : runner_->calls())
    copied = copied || call.kind == FakeModelRunner::Call::kCopy;
  EXPECT_TRUE(copied) << "beams diverged without copying a shared block";
  ExpectAllBlocksFree();
}

// A GPU runner sends a row's best candidates only (DecodeRow::candidates):
// greedy, top-k sampling (with min_new_tokens masking EOS) and beam search
// (all logits) still give exactly their reference tokens.
TEST_F(EngineTest, OnlyTheCandidatesGiveTheSameTokens) {
  Engine::Options options;
  options.kv_block_size = 4;
  FakeModelRunner::Options runner;
  runner.only_candidates = true;
  Build(options, runner);
  auto greedy = MakeRequest(0.1f, 12);
  auto sampled = MakeRequest(0.3f, 10, 7);
  sampled->settings.num_return_sequences = 3;
  sampled->settings.sampling.temperature = 1.0f;
  sampled->settings.sampling.top_k = 5;
  sampled->settings.sampling.min_new_tokens = 4;
  auto beams = MakeRequest(0.4f, 12, 5);
  beams->settings.num_beams = 4;
  beams->settings.num_return_sequences = 2;
  auto greedy_sink = Run(greedy);
  auto sampled_sink = Run(sampled);
  auto beam_sink = Run(beams);
  ASSERT_TRUE(greedy_sink->status().ok()) << greedy_sink->status();
  ASSERT_TRUE(sampled_sink->status().ok()) << sampled_sink->status();
  ASSERT_TRUE(beam_sink->status().ok()) << beam_sink->status();
  EXPECT_EQ(greedy_sink->Tokens(), Reference(*runner_, *greedy));
  for (int s = 0; s < 3; ++s)
    EXPECT_EQ(sampled_sink->Tokens(s), Reference(*runner_, *sampled, s)) << s;
  const auto want = ReferenceBeams(*runner_, *beams);
  ASSERT_EQ(want.size(), 2u);
  EXPECT_EQ(beam_sink->Tokens(0), want[0]);
  EXPECT_EQ(beam_sink->Tokens(1), want[1]);
  // One request at a time: each decode call's rows are one request's.
  std::set<std::vector<int>> seen;
  for (const auto& call : runner_->calls()) {
    if (call.kind == FakeModelRunner::Call::kDecode)
      seen.insert(call.candidates);
  }
  EXPECT_TRUE(seen.count({1})) << "greedy rows need one candidate";
  EXPECT_TRUE(seen.count({6, 6, 6}))
      << "top_k 5 + EOS masked by min_new_tokens";
  EXPECT_TRUE(seen.count({5, 5, 5})) << "top_k 5 once EOS is allowed";
  EXPECT_TRUE(seen.count({0, 0, 0, 0})) << "beam search needs every logit";
  ExpectAllBlocksFree();
}

// A long prompt under a small per-chunk limit prefills over several chunks.
TEST_F(EngineTest, ChunkedPrefillGivesTheSameTokens) {
  Engine::Options options;
  options.max_prefill_chunk = 8;
  Build(options);
  auto request = MakeRequest(0.5f, 8, 40);  // 44 positions: 6 chunks
  auto sink = Run(request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->Tokens(), Reference(*runner_, *request));
  int chunks = 0;
  for (const auto& call : runner_->calls())
    chunks += call.kind == FakeModelRunner::Call::kPrefill;
  EXPECT_EQ(chunks, 6);
}

// The step planner: while a stream decodes, a new image's vision stage runs
// a few layers per step, so the stream's tokens stay about decode_interval
// apart instead of waiting for the whole encoder (6 layers x 15 ms).
TEST_F(EngineTest, ANewImageNeverStallsARunningStream) {
  Engine::Options options;
  options.decode_interval = absl::Milliseconds(50);
  Build(options);
  auto running = MakeRequest(0.6f, 60);
  running->settings.sampling.min_new_tokens = 60;
  auto stream = Submit(running);
  stream->WaitForTokens(5);
  std::vector<std::shared_ptr<RecordingSink>> arrivals;
  for (int i = 0; i < 3; ++i) arrivals.push_back(Submit(MakeRequest(0.7f + 0.01f * i, 4)));
  stream->Wait();
  for (auto& sink : arrivals) {
    sink->Wait();
    EXPECT_TRUE(sink->status().ok()) << sink->status();
  }
  absl::Duration worst;
  absl::Duration previous = absl::InfiniteDuration();
  for (const TokenDelta& d : stream->deltas()) {
    if (previous != absl::InfiniteDuration())
      worst = std::max(worst, d.elapsed - previous);
    previous = d.elapsed;
  }
  // One decode step (20 ms + 1 ms a row) plus at most the interval's budget
  // of other work, plus one indivisible piece: the Q-Former of a batch.
  EXPECT_LE(worst, absl::Milliseconds(50 + 5 * 3));
  EXPECT_GE(worst, absl::Milliseconds(21));
}

TEST_F(EngineTest, CancelFreesTheBlocksWithinOneDecodeStep) {
  Build();
  auto request = MakeRequest(0.8f, 200);
  request->settings.sampling.min_new_tokens = 200;
  auto sink = std::make_shared<RecordingSink>();
  std::atomic<int> decodes_at_cancel{-1};
  sink->on_tokens = [&, weak = std::weak_ptr<GenerationRequest>(request)](
                        const TokenDelta& delta) {
    if (delta.token_ids.empty() || decodes_at_cancel.load() >= 0) return;
    int decodes = 0;
    for (const auto& call : runner_->calls())
      decodes += call.kind == FakeModelRunner::Call::kDecode;
    if (decodes >= 3) {
      decodes_at_cancel = decodes;
      weak.lock()->cancelled.store(true);
    }
  };
  Submit(request, sink);
  sink->Wait();
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kCancelled);
  ExpectAllBlocksFree();
  int decodes = 0;
  for (const auto& call : runner_->calls())
    decodes += call.kind == FakeModelRunner::Call::kDecode;
  // Cancelled during a step's output: freed before the next decode step.
  EXPECT_EQ(decodes, decodes_at_cancel.load());
  EXPECT_EQ(sink->LastFinish(), FinishReason::kCancelled);
}

TEST_F(EngineTest, DeadlinesEndQueuedAndDecodingRequests) {
  Engine::Options options;
  options.max_running_sequences = 1;
  Build(options);
  auto decoding = MakeRequest(0.11f, 100);
  decoding->settings.sampling.min_new_tokens = 100;
  decoding->deadline = clock_.Now() + absl::Milliseconds(500);
  auto queued = MakeRequest(0.12f, 10);
  queued->deadline = clock_.Now() + absl::Milliseconds(200);
  auto a = Submit(decoding);
  a->WaitForTokens(1);
  auto b = Submit(queued);
  a->Wait();
  b->Wait();
  EXPECT_EQ(a->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(a->status().message().find("generating"), std::string::npos);
  EXPECT_GT(a->Tokens().size(), 5u);
  EXPECT_EQ(b->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(b->Tokens().empty());
  ExpectAllBlocksFree();
}

// With the engine busy (one sequence at a time), a HIGH request submitted
// after queued LOW ones starts first.
TEST_F(EngineTest, HighPriorityOvertakesQueuedLowOnes) {
  Engine::Options options;
  options.max_running_sequences = 1;
  Build(options);
  auto busy = MakeRequest(0.13f, 30);
  busy->settings.sampling.min_new_tokens = 30;
  auto busy_sink = Submit(busy);
  busy_sink->WaitForTokens(1);
  std::vector<std::shared_ptr<RecordingSink>> lows;
  for (int i = 0; i < 3; ++i) {
    auto low = MakeRequest(0.14f + 0.01f * i, 3);
    low->priority = Priority::kLow;
    lows.push_back(Submit(low));
  }
  auto high = MakeRequest(0.2f, 3);
  high->priority = Priority::kHigh;
  auto high_sink = Submit(high);
  for (auto& s : lows) s->Wait();
  high_sink->Wait();
  const absl::Duration high_first = high_sink->deltas().front().elapsed;
  for (auto& low : lows) {
    // elapsed counts from each request's arrival, all within the same step.
    EXPECT_GT(low->deltas().front().elapsed, high_first + absl::Milliseconds(20));
  }
}

// Liveness reads progress(): work reaching an idle engine starts the stall
// clock (an engine idle since long ago is not stalled the moment a request
// comes); when the work is done nothing is pending and the clock says when
// the last step ended.
TEST_F(EngineTest, ProgressSaysWhenWorkWaitsAndSinceWhen) {
  Build();
  ASSERT_TRUE(engine_->WaitIdle(absl::Seconds(30)));
  EXPECT_FALSE(engine_->progress().work_pending);
  clock_.Advance(absl::Hours(1));
  const absl::Time submitted = clock_.Now();
  auto sink = Submit(MakeRequest(0.31f, 4));
  const Engine::Progress waiting = engine_->progress();
  EXPECT_TRUE(waiting.work_pending || sink->completions() == 1);
  EXPECT_GE(waiting.last_step_end, submitted);
  sink->Wait();
  ASSERT_TRUE(engine_->WaitIdle(absl::Seconds(30)));
  Engine::Progress done = engine_->progress();
  for (int i = 0; i < 1000 && done.work_pending; ++i) {
    absl::SleepFor(absl::Milliseconds(2));  // published after the step
    done = engine_->progress();
  }
  EXPECT_FALSE(done.work_pending);
  EXPECT_GE(done.last_step_end, submitted);
}

// The vision-stage histogram holds the whole stage: the encoder's layers
// (simulated: 6 x 15 ms for one image) and the Q-Former (5 ms), not the
// Q-Former alone (it did, and hid where time to first token went).
TEST_F(EngineTest, TheVisionStageHistogramCountsTheEncoderLayers) {
  Build();
  Run(MakeRequest(0.33f, 2));
  ASSERT_TRUE(engine_->WaitIdle(absl::Seconds(30)));
  double sum = -1;
  for (const auto& family : metrics_.registry()->Collect()) {
    if (family.name == "iblip_vision_stage_duration_seconds")
      sum = family.metric.at(0).histogram.sample_sum;
  }
  EXPECT_GE(sum, 0.095);  // layers and Q-Former, and the embedding
  EXPECT_LT(sum, 0.1);
}

TEST_F(EngineTest, AFailingImageFailsAloneInItsBatch) {
  Engine::Options options;
  options.vision_max_batch_size = 4;
  Build(options);
  runner_->PoisonImage(FakeModelRunner::PixelsId(Pixels(0.33f)));
  std::vector<std::shared_ptr<GenerationRequest>> requests;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (float image : {0.31f, 0.33f, 0.35f}) {
    requests.push_back(MakeRequest(image, 5));
    sinks.push_back(Submit(requests.back()));
  }
  for (auto& s : sinks) s->Wait();
  EXPECT_TRUE(sinks[0]->status().ok()) << sinks[0]->status();
  EXPECT_EQ(sinks[1]->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(sinks[2]->status().ok()) << sinks[2]->status();
  EXPECT_EQ(sinks[2]->Tokens(), Reference(*runner_, *requests[2]));
  ExpectAllBlocksFree();
}

TEST_F(EngineTest, StopSequenceHitsEndTheSequenceAndFreeItsBlocks) {
  Build();
  auto request = MakeRequest(0.9f, 100);
  request->settings.sampling.min_new_tokens = 100;
  auto sink = std::make_shared<RecordingSink>();
  auto count = std::make_shared<int>(0);
  sink->on_tokens = [weak = std::weak_ptr<GenerationRequest>(request),
                     count](const TokenDelta& delta) {
    *count += static_cast<int>(delta.token_ids.size());
    if (*count == 4) weak.lock()->stop_sequence_hits.fetch_or(1);
  };
  Submit(request, sink);
  sink->Wait();
  EXPECT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_LT(sink->Tokens().size(), 10u);
  EXPECT_EQ(sink->LastFinish(), FinishReason::kStopSequence);
  ExpectAllBlocksFree();
}

TEST_F(EngineTest, ARequestThatCanNeverFitIsRefusedNamingTheParameters) {
  Engine::Options options;
  options.kv_block_size = 4;
  FakeModelRunner::Options runner;
  options.kv_cache_bytes = 8 * 4 * runner.kv_bytes_per_position;  // 8 blocks
  Build(options, runner);
  auto sink = Run(MakeRequest(0.5f, 200));
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(sink->status().message().find("max_new_tokens"), std::string::npos);
  auto fits = Run(MakeRequest(0.5f, 8));
  EXPECT_TRUE(fits->status().ok()) << fits->status();
}

TEST_F(EngineTest, InternalRequestsStayOutOfTheMetrics) {
  Build();
  auto warmup = MakeRequest(0.05f, 4);
  warmup->internal = true;
  ASSERT_TRUE(Run(warmup)->status().ok());
  EXPECT_EQ(MetricValue(metrics_, "iblip_time_to_first_token_seconds"), 0);
  EXPECT_EQ(MetricValue(metrics_, "iblip_vision_batch_size"), 0);
  EXPECT_EQ(MetricValue(metrics_, "iblip_decode_batch_size"), 0);
  ASSERT_TRUE(Run(MakeRequest(0.06f, 4))->status().ok());
  EXPECT_EQ(MetricValue(metrics_, "iblip_time_to_first_token_seconds"), 1);
  EXPECT_EQ(MetricValue(metrics_, "iblip_vision_batch_size"), 1);
}

TEST_F(EngineTest, AdmissionIsBoundedAndReleased) {
  Engine::Options options;
  options.max_queue_size = 4;
  Build(options);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(engine_->Admit().ok());
  EXPECT_EQ(engine_->Admit().code(), absl::StatusCode::kResourceExhausted);
  for (int i = 0; i < 4; ++i) engine_->CancelAdmission();
  EXPECT_TRUE(engine_->WaitIdle(absl::Seconds(5)));
  engine_->BeginDrain();
  EXPECT_EQ(engine_->Admit().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, EncoderDecoderModelsMatchTheirReference) {
  FakeModelRunner::Options runner;
  runner.encoder_decoder = true;
  Engine::Options options;
  options.kv_block_size = 4;
  Build(options, runner);
  std::vector<std::shared_ptr<GenerationRequest>> requests;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(MakeRequest(0.4f + 0.01f * i, 9, 5 + i));
    sinks.push_back(Submit(requests.back()));
  }
  auto beams = MakeRequest(0.45f, 8);
  beams->settings.num_beams = 3;
  auto beam_sink = Submit(beams);
  for (int i = 0; i < 4; ++i) {
    sinks[i]->Wait();
    EXPECT_EQ(sinks[i]->Tokens(), Reference(*runner_, *requests[i])) << i;
  }
  beam_sink->Wait();
  EXPECT_EQ(beam_sink->Tokens(), ReferenceBeams(*runner_, *beams)[0]);
  ExpectAllBlocksFree();
}

}  // namespace
}  // namespace iblip::server
