// The engine: continuous batching on the tiny model, and Hugging Face parity
// (greedy and beam search) on packages exported from the fixture checkpoints.
#include "server/engine/engine.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "model/runtime/package.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_package.h"
#include "tests/unit/tiny_model.h"

namespace iblip::server {
namespace {

namespace fs = std::filesystem;
using testing::SharedTinyModel;

// Records what the engine reports for one request; Wait() blocks until done.
class RecordingSink final : public ResponseSink {
 public:
  void OnDelta(SequenceDelta delta) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (on_delta) on_delta(delta);
    deltas.push_back(std::move(delta));
  }
  void OnComplete(const absl::Status& s, const UsageStats& u) override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++completions;
    status = s;
    usage = u;
    done = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return done; });
  }
  std::vector<int32_t> Tokens(int index = 0) const {
    std::vector<int32_t> ids;
    for (const auto& d : deltas) {
      if (d.index == index)
        ids.insert(ids.end(), d.token_ids.begin(), d.token_ids.end());
    }
    return ids;
  }
  std::string Text(int index = 0) const {
    std::string text;
    for (const auto& d : deltas) {
      if (d.index == index) text += d.text;
    }
    return text;
  }

  std::function<void(const SequenceDelta&)> on_delta;
  std::vector<SequenceDelta> deltas;
  absl::Status status;
  UsageStats usage;
  int completions = 0;
  bool done = false;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
};

std::unique_ptr<Engine> MakeEngine(model::InstructBlipModel& model,
                                   const model::LmTokenizer& tokenizer,
                                   std::vector<int32_t> eos, Metrics& metrics,
                                   int slots = 16) {
  Engine::Options options;
  options.max_queue_size = 64;
  options.max_running_sequences = slots;
  options.kv_cache_bytes = 256ull << 20;
  options.max_decoder_length = 64;
  auto engine =
      Engine::Create(model, tokenizer, std::move(eos), metrics, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  (*engine)->Start();
  return std::move(*engine);
}

std::shared_ptr<GenerationRequest> TinyRequest(const std::string& prompt,
                                               int max_new_tokens,
                                               float pixel = 0.1f) {
  const auto& tiny = SharedTinyModel();
  auto request = std::make_shared<GenerationRequest>();
  request->request_id = "test";
  request->arrival = absl::Now();
  request->pixels.size = tiny.manifest.image.size;
  request->pixels.chw.assign(3ull * request->pixels.size * request->pixels.size,
                             pixel);
  request->prompt_ids = tiny.lm_tokenizer->EncodePrompt(prompt);
  request->qformer_ids = tiny.qformer_tokenizer->Encode(prompt);
  request->settings.max_new_tokens = max_new_tokens;
  request->settings.seed = 5;
  return request;
}

std::shared_ptr<RecordingSink> Submit(
    Engine& engine, std::shared_ptr<GenerationRequest> request) {
  auto sink = std::make_shared<RecordingSink>();
  request->sink = sink;
  EXPECT_TRUE(engine.Admit().ok());
  engine.Submit(std::move(request));
  return sink;
}

class EngineTest : public ::testing::Test {
 protected:
  EngineTest()
      : engine_(MakeEngine(
            *SharedTinyModel().model, *SharedTinyModel().lm_tokenizer,
            SharedTinyModel().manifest.eos_token_ids, metrics_)) {}

  std::shared_ptr<RecordingSink> Run(
      std::shared_ptr<GenerationRequest> request) {
    auto sink = Submit(*engine_, std::move(request));
    sink->Wait();
    return sink;
  }

  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, GreedyIsDeterministicAndReportsUsage) {
  auto a = Run(TinyRequest("what is in the picture", 12));
  auto b = Run(TinyRequest("what is in the picture", 12));
  ASSERT_TRUE(a->status.ok()) << a->status;
  EXPECT_FALSE(a->Tokens().empty());
  EXPECT_EQ(a->Tokens(), b->Tokens());
  EXPECT_EQ(a->Text(), SharedTinyModel().lm_tokenizer->Decode(a->Tokens()));
  EXPECT_EQ(a->usage.generated_tokens, static_cast<int>(a->Tokens().size()));
  EXPECT_EQ(a->usage.image_tokens, SharedTinyModel().manifest.num_query_tokens);
  EXPECT_GT(a->usage.prompt_tokens, 1);
  EXPECT_EQ(a->completions, 1);
  const FinishReason last = a->deltas.back().finish_reason;
  ASSERT_TRUE(last == FinishReason::kStop || last == FinishReason::kLength);
  if (last == FinishReason::kLength) {
    EXPECT_EQ(a->Tokens().size(), 12u);
  } else {
    EXPECT_TRUE(a->Tokens().back() == 1 || a->Tokens().back() == 2);
  }
}

// The sample count of a histogram, or the value of a counter (with
// `label`="cache" matching `cache` when given), from the registry.
double MetricValue(Metrics& metrics, const std::string& name,
                   const std::string& cache = "") {
  for (const auto& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      if (!cache.empty() &&
          (metric.label.empty() || metric.label[0].value != cache)) {
        continue;
      }
      if (family.type == prometheus::MetricType::Histogram)
        return static_cast<double>(metric.histogram.sample_count);
      return metric.counter.value;
    }
  }
  return 0;
}

TEST_F(EngineTest, CachedImagesSkipTheVisionStageAndAnswerTheSame) {
  Metrics metrics;
  FeatureCache cache(64 << 20, 64 << 20, metrics);
  Engine::Options options;
  options.max_running_sequences = 4;
  options.kv_cache_bytes = 64ull << 20;
  auto created = Engine::Create(
      *SharedTinyModel().model, *SharedTinyModel().lm_tokenizer,
      SharedTinyModel().manifest.eos_token_ids, metrics, options, &cache);
  ASSERT_TRUE(created.ok()) << created.status();
  Engine& engine = **created;
  engine.Start();

  auto first = TinyRequest("what is in the picture", 8);
  first->image_hash = "image-1";
  const std::vector<int32_t> qformer_ids = first->qformer_ids;
  auto miss = Submit(engine, first);
  miss->Wait();
  ASSERT_TRUE(miss->status.ok()) << miss->status;
  EXPECT_EQ(MetricValue(metrics, "iblip_vision_batch_size"), 1);

  // What the preprocessing pool does for a repeated image and question.
  auto again = TinyRequest("what is in the picture", 8);
  again->image_hash = "image-1";
  auto embedding = cache.FindEmbedding("image-1", qformer_ids);
  ASSERT_TRUE(embedding.has_value());
  again->image = *embedding;
  again->pixels = model::PixelValues();
  auto hit = Submit(engine, again);
  hit->Wait();
  ASSERT_TRUE(hit->status.ok()) << hit->status;
  EXPECT_EQ(hit->Tokens(), miss->Tokens());
  EXPECT_EQ(MetricValue(metrics, "iblip_vision_batch_size"), 1);

  // Another question on the image: the Q-Former runs, the vision encoder
  // does not (no pixels at all).
  auto follow_up = TinyRequest("describe", 8);
  follow_up->image_hash = "image-1";
  EXPECT_FALSE(cache.FindEmbedding("image-1", follow_up->qformer_ids));
  auto vision = cache.FindVision("image-1");
  ASSERT_TRUE(vision.has_value());
  follow_up->vision = *vision;
  follow_up->pixels = model::PixelValues();
  auto follow_up_sink = Submit(engine, follow_up);
  follow_up_sink->Wait();
  ASSERT_TRUE(follow_up_sink->status.ok()) << follow_up_sink->status;
  EXPECT_EQ(follow_up_sink->Tokens(),
            Run(TinyRequest("describe", 8))->Tokens());
  EXPECT_EQ(MetricValue(metrics, "iblip_cache_hits_total", "qformer"), 1);
  EXPECT_EQ(MetricValue(metrics, "iblip_cache_misses_total", "qformer"), 1);
  EXPECT_EQ(MetricValue(metrics, "iblip_cache_hits_total", "vision"), 1);
}

// A started engine whose vision stage runs only full batches of
// `batch_size` (or after `delay`).
std::unique_ptr<Engine> StartBatchingEngine(Metrics& metrics, int batch_size,
                                            absl::Duration delay) {
  Engine::Options options;
  options.max_running_sequences = 8;
  options.kv_cache_bytes = 64ull << 20;
  options.vision_max_batch_size = batch_size;
  options.vision_max_queue_delay = delay;
  auto created = Engine::Create(
      *SharedTinyModel().model, *SharedTinyModel().lm_tokenizer,
      SharedTinyModel().manifest.eos_token_ids, metrics, options);
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return nullptr;
  (*created)->Start();
  return std::move(*created);
}

TEST_F(EngineTest, TheVisionBatcherGroupsRequestsThatArriveTogether) {
  Metrics metrics;
  auto created = StartBatchingEngine(metrics, 4, absl::Seconds(30));
  ASSERT_NE(created, nullptr);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<std::string> prompts = {"describe", "what is in the picture",
                                      "a red circle", "count the shapes"};
  for (size_t i = 0; i < prompts.size(); ++i)
    sinks.push_back(Submit(*created, TinyRequest(prompts[i], 6, 0.1f * i)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    sinks[i]->Wait();
    ASSERT_TRUE(sinks[i]->status.ok()) << sinks[i]->status;
    // Same tokens as the request run alone on the default engine.
    EXPECT_EQ(sinks[i]->Tokens(),
              Run(TinyRequest(prompts[i], 6, 0.1f * i))->Tokens())
        << prompts[i];
  }
  EXPECT_EQ(MetricValue(metrics, "iblip_vision_batch_size"), 1);  // one batch
}

TEST_F(EngineTest, ProgressSaysWhenWorkWaitsAndSinceWhen) {
  Metrics metrics;
  auto created = StartBatchingEngine(metrics, 2, absl::Hours(1));
  ASSERT_NE(created, nullptr);
  Engine& engine = *created;
  EXPECT_FALSE(engine.progress().work_pending);

  // Work arriving at an idle engine starts the stall clock: the engine's
  // creation long ago does not count against it.
  const absl::Time before_submit = absl::Now();
  auto first = Submit(engine, TinyRequest("describe", 3));
  Engine::Progress waiting = engine.progress();
  EXPECT_TRUE(waiting.work_pending);
  EXPECT_GE(waiting.last_step_end, before_submit);

  // A second request makes the batch due; when both are done, nothing waits
  // and the clock says when the last step ended.
  auto second = Submit(engine, TinyRequest("count the shapes", 3));
  first->Wait();
  second->Wait();
  const absl::Time after_done = absl::Now();
  // The engine thread publishes progress at the end of the iteration that
  // completed the requests: wait for that condition.
  Engine::Progress done = engine.progress();
  for (int i = 0; i < 1000 && done.work_pending; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
    done = engine.progress();
  }
  EXPECT_FALSE(done.work_pending);
  EXPECT_GT(done.last_step_end, waiting.last_step_end);
  EXPECT_LE(done.last_step_end, after_done + absl::Seconds(5));
}

TEST_F(EngineTest, GreedyTokensDoNotDependOnTheBatch) {
  auto alone = Run(TinyRequest("a red circle and a blue square", 24));
  ASSERT_TRUE(alone->status.ok());
  // The same request among 15 others of different prompt and output lengths.
  std::vector<std::shared_ptr<RecordingSink>> others;
  const char* prompts[] = {"what", "how many shapes are there",
                           "describe the image in detail", "is there a star",
                           "left or right"};
  for (int i = 0; i < 8; ++i) {
    others.push_back(
        Submit(*engine_, TinyRequest(prompts[i % 5], 4 + 5 * i, 0.05f * i)));
  }
  auto crowded =
      Submit(*engine_, TinyRequest("a red circle and a blue square", 24));
  for (int i = 8; i < 15; ++i) {
    others.push_back(
        Submit(*engine_, TinyRequest(prompts[i % 5], 4 + 3 * i, 0.03f * i)));
  }
  crowded->Wait();
  for (auto& sink : others) sink->Wait();
  EXPECT_EQ(crowded->Tokens(), alone->Tokens());
  for (auto& sink : others) EXPECT_TRUE(sink->status.ok()) << sink->status;
  EXPECT_TRUE(engine_->WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(engine_->free_cache_slots(), engine_->cache_capacity());
}

TEST_F(EngineTest, SeededSamplingIsReproducibleAndSequencesDiffer) {
  auto make = [&] {
    auto request = TinyRequest("describe", 16);
    request->settings.sampling.temperature = 1.5f;
    request->settings.sampling.top_k = 0;
    request->settings.sampling.min_new_tokens = 16;
    request->settings.num_return_sequences = 2;
    return request;
  };
  auto a = Run(make());
  auto b = Run(make());
  ASSERT_TRUE(a->status.ok()) << a->status;
  EXPECT_EQ(a->Tokens(0), b->Tokens(0));
  EXPECT_EQ(a->Tokens(1), b->Tokens(1));
  EXPECT_NE(a->Tokens(0), a->Tokens(1));
  EXPECT_EQ(a->usage.generated_tokens, 32);
}

TEST_F(EngineTest, MinAndMaxNewTokens) {
  auto request = TinyRequest("describe", 9);
  request->settings.sampling.min_new_tokens = 9;  // EOS masked throughout
  auto sink = Run(request);
  ASSERT_TRUE(sink->status.ok());
  EXPECT_EQ(sink->Tokens().size(), 9u);
  EXPECT_EQ(sink->deltas.back().finish_reason, FinishReason::kLength);
}

TEST_F(EngineTest, CancelStopsWithinOneStepAndFreesTheSlot) {
  auto request = TinyRequest("describe", 200);
  request->settings.sampling.min_new_tokens = 200;
  auto sink = std::make_shared<RecordingSink>();
  sink->on_delta = [request](const SequenceDelta&) {
    request->cancelled.store(true);
  };
  request->sink = sink;
  ASSERT_TRUE(engine_->Admit().ok());
  engine_->Submit(request);
  sink->Wait();
  EXPECT_EQ(sink->status.code(), absl::StatusCode::kCancelled);
  EXPECT_LE(sink->deltas.size(), 2u);
  EXPECT_TRUE(engine_->WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(engine_->free_cache_slots(), engine_->cache_capacity());
}

TEST_F(EngineTest, ExpiredDeadlineIsDeadlineExceeded) {
  auto request = TinyRequest("describe", 10);
  request->deadline = absl::Now() - absl::Seconds(1);
  auto sink = Run(request);
  EXPECT_EQ(sink->status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(sink->deltas.empty());
}

TEST_F(EngineTest, AdmissionIsBoundedAndReleased) {
  Metrics metrics;
  auto engine =
      MakeEngine(*SharedTinyModel().model, *SharedTinyModel().lm_tokenizer,
                 SharedTinyModel().manifest.eos_token_ids, metrics);
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(engine->Admit().ok());
  EXPECT_EQ(engine->Admit().code(), absl::StatusCode::kResourceExhausted);
  for (int i = 0; i < 64; ++i) engine->CancelAdmission();
  EXPECT_TRUE(engine->WaitIdle(absl::Seconds(5)));
  EXPECT_TRUE(engine->Admit().ok());
  engine->CancelAdmission();
  engine->BeginDrain();
  EXPECT_EQ(engine->Admit().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, SlotsAreReusedWhenMoreRequestsThanSlotsArrive) {
  Metrics metrics;
  auto engine = MakeEngine(
      *SharedTinyModel().model, *SharedTinyModel().lm_tokenizer,
      SharedTinyModel().manifest.eos_token_ids, metrics, /*slots=*/2);
  ASSERT_EQ(engine->cache_capacity(), 2);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 10; ++i)
    sinks.push_back(Submit(*engine, TinyRequest("describe", 6 + i)));
  for (auto& sink : sinks) {
    sink->Wait();
    EXPECT_TRUE(sink->status.ok()) << sink->status;
  }
  EXPECT_TRUE(engine->WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(engine->free_cache_slots(), 2);
}

TEST_F(EngineTest, AFailingRequestFailsAlone) {
  auto good = Submit(*engine_, TinyRequest("describe", 20));
  auto bad_request = TinyRequest("describe", 20);
  bad_request->prompt_ids.push_back(
      1 << 20);  // out of vocabulary: the module throws
  auto bad = Submit(*engine_, bad_request);
  auto also_good = Submit(*engine_, TinyRequest("what", 20));
  bad->Wait();
  good->Wait();
  also_good->Wait();
  EXPECT_EQ(bad->status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(good->status.ok()) << good->status;
  EXPECT_TRUE(also_good->status.ok()) << also_good->status;
}

TEST_F(EngineTest, StopSequenceEndsTheSequence) {
  auto reference = Run(TinyRequest("what is in the picture", 12));
  const std::string text = reference->Text();
  ASSERT_GE(text.size(), 4u)
      << "the tiny model's greedy text is too short for this test";
  auto request = TinyRequest("what is in the picture", 12);
  request->settings.stop_sequences = {text.substr(2, 2)};
  auto stopped = Run(request);
  ASSERT_TRUE(stopped->status.ok());
  EXPECT_EQ(stopped->deltas.back().finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(stopped->Text(), text.substr(0, text.find(text.substr(2, 2))));
}

// --- Hugging Face parity through the engine ---------------------------------

struct FixtureModel {
  model::PackageManifest manifest;
  std::unique_ptr<model::InstructBlipModel> model;
  std::unique_ptr<model::LmTokenizer> tokenizer;
};

FixtureModel& LoadFixture(const std::string& checkpoint) {
  static std::map<std::string, FixtureModel> cache;
  FixtureModel& f = cache[checkpoint];
  if (!f.model) {
    f.manifest =
        *model::LoadPackageManifest(testing::FixturePackageDir(checkpoint));
    f.model = std::move(*model::InstructBlipModel::Load(
        f.manifest, model::RuntimeOptions{"cpu", 1}));
    f.tokenizer = std::move(*model::LmTokenizer::Load(f.manifest.lm_tokenizer));
  }
  return f;
}

struct ParityCase {
  std::string checkpoint, name;
};

class EngineParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(EngineParityTest, GreedyAndBeamSearchMatchHuggingFace) {
  const ParityCase& c = GetParam();
  FixtureModel& f = LoadFixture(c.checkpoint);
  const fs::path dir =
      fs::path(testing::FixturesDir()) / "cases" / c.checkpoint / c.name;
  const auto reference =
      nlohmann::json::parse(testing::ReadFileOrDie(dir / "reference.json"));
  const auto pixels = testing::ReadNpyOrDie(dir / "pixel_values.npy");
  const int64_t size = pixels.shape[2], plane = 3 * size * size;

  for (const std::string mode :
       {"greedy", "beam3", "beam5", "greedy_rep_min"}) {
    const auto& expected = reference["generate"][mode];
    const auto& kwargs = expected["kwargs"];
    // Hugging Face's stop ids for this case (the reference stops only there).
    Metrics metrics;
    auto engine = MakeEngine(*f.model, *f.tokenizer,
                             {kwargs.value("eos_token_id", 1)}, metrics);
    std::vector<std::pair<size_t, std::shared_ptr<RecordingSink>>> runs;
    for (size_t row = 0; row < reference["input_ids"].size(); ++row) {
      // The Q-Former of a left-padded row sees shifted positions in Hugging
      // Face's batch; the engine never pads (model_parity_test covers that
      // row).
      const auto& qmask = reference["qformer_attention_mask"][row];
      if (std::find(qmask.begin(), qmask.end(), 0) != qmask.end() &&
          qmask[0] == 0)
        continue;
      auto request = std::make_shared<GenerationRequest>();
      request->arrival = absl::Now();
      request->pixels.size = static_cast<int>(size);
      request->pixels.chw.assign(pixels.data.begin() + row * plane,
                                 pixels.data.begin() + (row + 1) * plane);
      for (size_t i = 0; i < reference["input_ids"][row].size(); ++i) {
        if (reference["attention_mask"][row][i] == 1)
          request->prompt_ids.push_back(reference["input_ids"][row][i]);
      }
      for (size_t i = 0; i < qmask.size(); ++i) {
        if (qmask[i] == 1)
          request->qformer_ids.push_back(
              reference["qformer_input_ids"][row][i]);
      }
      GenerationSettings& s = request->settings;
      s.max_new_tokens = kwargs["max_new_tokens"];
      s.num_beams = kwargs.value("num_beams", 1);
      s.length_penalty = kwargs.value("length_penalty", 1.0f);
      s.sampling.repetition_penalty = kwargs.value("repetition_penalty", 1.0f);
      s.sampling.min_new_tokens = kwargs.value("min_new_tokens", 0);
      runs.emplace_back(row,
                        Submit(*engine, request));  // rows run in one batch
    }
    for (auto& [row, sink] : runs) {
      sink->Wait();
      SCOPED_TRACE(mode + " row " + std::to_string(row));
      ASSERT_TRUE(sink->status.ok()) << sink->status;
      // sequences = [start] + generated (+ padding after a finished row).
      std::vector<int32_t> want;
      const int32_t pad =
          kwargs.value("pad_token_id", c.checkpoint == "tiny-t5" ? 0 : -1);
      for (size_t i = 1; i < expected["sequences"][row].size(); ++i)
        want.push_back(expected["sequences"][row][i]);
      const std::vector<int32_t> got = sink->Tokens();
      while (want.size() > got.size() && want.back() == pad) want.pop_back();
      EXPECT_EQ(got, want);
    }
  }
}

std::vector<ParityCase> ParityCases() {
  std::vector<ParityCase> cases;
  for (const std::string checkpoint : {"tiny-llama", "tiny-t5"}) {
    for (const std::string name :
         {"batch2", "gradient", "gray_noise", "rgba_shapes", "shapes"}) {
      cases.push_back({checkpoint, name});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineParityTest,
                         ::testing::ValuesIn(ParityCases()),
                         [](const ::testing::TestParamInfo<ParityCase>& info) {
                           std::string name =
                               info.param.checkpoint + "_" + info.param.name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace iblip::server
