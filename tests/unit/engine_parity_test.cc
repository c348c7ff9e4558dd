// The engine on real packages: Hugging Face parity (greedy and beam search,
// through the paged KV cache) on packages exported from the fixture
// checkpoints, and the TorchScript runner's batching and caching on the tiny
// random package. (Scheduling, preemption and failure isolation are tested
// on the fake runner: engine_test.cc.)
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>

#include "common/mutex.h"
#include "model/runtime/package.h"
#include "nlohmann/json.hpp"
#include "server/engine/engine.h"
#include "server/engine/torch_model_runner.h"
#include "tests/unit/test_package.h"
#include "tests/unit/tiny_model.h"

namespace iblip::server {
namespace {

namespace fs = std::filesystem;
using testing::SharedTinyModel;

// Records what the engine reports for one request; Wait() blocks until done.
class RecordingSink final : public TokenSink {
 public:
  void OnTokens(TokenDelta delta) override {
    MutexLock lock(&mutex_);
    deltas.push_back(std::move(delta));
  }
  void OnComplete(const absl::Status& s, const UsageStats& u) override {
    MutexLock lock(&mutex_);
    status = s;
    usage = u;
    done = true;
    changed_.SignalAll();
  }
  void Wait() {
    MutexLock lock(&mutex_);
    while (!done) changed_.Wait(&mutex_);
  }
  std::vector<int32_t> Tokens(int index = 0) {
    MutexLock lock(&mutex_);
    std::vector<int32_t> ids;
    for (const auto& d : deltas) {
      if (d.index == index)
        ids.insert(ids.end(), d.token_ids.begin(), d.token_ids.end());
    }
    return ids;
  }

  // Read after Wait().
  std::vector<TokenDelta> deltas;
  absl::Status status;
  UsageStats usage;
  bool done = false;

 private:
  Mutex mutex_;
  CondVar changed_;
};

struct RunningEngine {
  std::unique_ptr<TorchModelRunner> runner;
  std::unique_ptr<Engine> engine;
};

RunningEngine MakeEngine(model::InstructBlipModel& model,
                         std::vector<int32_t> eos, Metrics& metrics,
                         FeatureCache* cache = nullptr,
                         Engine::Options options = {}) {
  RunningEngine running;
  running.runner = std::make_unique<TorchModelRunner>(model);
  options.max_queue_size = 64;
  options.kv_cache_bytes = 64ull << 20;
  auto engine = Engine::Create(*running.runner, std::move(eos), metrics,
                               options, cache);
  EXPECT_TRUE(engine.ok()) << engine.status();
  running.engine = std::move(*engine);
  running.engine->Start([&model] { model.BindCallingThread(); });
  return running;
}

std::shared_ptr<RecordingSink> Submit(
    Engine& engine, std::shared_ptr<GenerationRequest> request) {
  auto sink = std::make_shared<RecordingSink>();
  request->sink = sink;
  request->arrival = absl::Now();
  EXPECT_TRUE(engine.Admit().ok());
  engine.Submit(std::move(request));
  return sink;
}

std::shared_ptr<GenerationRequest> TinyRequest(const std::string& prompt,
                                               int max_new_tokens,
                                               float pixel = 0.1f) {
  const auto& tiny = SharedTinyModel();
  auto request = std::make_shared<GenerationRequest>();
  request->request_id = "test";
  request->pixels.size = tiny.manifest.image.size;
  request->pixels.chw.assign(3ull * request->pixels.size * request->pixels.size,
                             pixel);
  request->prompt_ids = tiny.lm_tokenizer->EncodePrompt(prompt);
  request->qformer_ids = tiny.qformer_tokenizer->Encode(prompt);
  request->settings.max_new_tokens = max_new_tokens;
  request->settings.seed = 5;
  return request;
}

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

// The real model through the runner: the vision encoder in pieces, the
// paged cache, a crowd of other requests: same tokens as alone.
TEST(TorchEngineTest, GreedyTokensDoNotDependOnTheBatch) {
  Metrics metrics;
  Engine::Options options;
  options.kv_block_size = 4;  // many blocks per sequence
  auto running = MakeEngine(*SharedTinyModel().model,
                            SharedTinyModel().manifest.eos_token_ids, metrics,
                            nullptr, options);
  Engine& engine = *running.engine;
  auto alone = Submit(engine, TinyRequest("a red circle and a blue square", 24));
  alone->Wait();
  ASSERT_TRUE(alone->status.ok()) << alone->status;
  std::vector<std::shared_ptr<RecordingSink>> others;
  const char* prompts[] = {"what", "how many shapes are there",
                           "describe the image in detail", "is there a star",
                           "left or right"};
  for (int i = 0; i < 8; ++i) {
    others.push_back(
        Submit(engine, TinyRequest(prompts[i % 5], 4 + 5 * i, 0.05f * i)));
  }
  auto crowded =
      Submit(engine, TinyRequest("a red circle and a blue square", 24));
  for (int i = 8; i < 15; ++i) {
    others.push_back(
        Submit(engine, TinyRequest(prompts[i % 5], 4 + 3 * i, 0.03f * i)));
  }
  crowded->Wait();
  for (auto& sink : others) sink->Wait();
  EXPECT_EQ(crowded->Tokens(), alone->Tokens());
  for (auto& sink : others) EXPECT_TRUE(sink->status.ok()) << sink->status;
  EXPECT_TRUE(engine.WaitIdle(absl::Seconds(10)));
}

// The vision encoder runs once per image: a repeated question is answered
// from the Q-Former cache, a new question on the image from the vision
// cache, with the same tokens as computed fresh.
TEST(TorchEngineTest, CachedImagesSkipTheVisionEncoderAndAnswerTheSame) {
  Metrics metrics;
  FeatureCache cache(64 << 20, 64 << 20, metrics);
  auto running = MakeEngine(*SharedTinyModel().model,
                            SharedTinyModel().manifest.eos_token_ids, metrics,
                            &cache);
  Engine& engine = *running.engine;
  auto first = TinyRequest("what is in the picture", 8);
  first->image_hash = "image-1";
  const std::vector<int32_t> qformer_ids = first->qformer_ids;
  auto miss = Submit(engine, first);
  miss->Wait();
  ASSERT_TRUE(miss->status.ok()) << miss->status;
  EXPECT_EQ(MetricValue(metrics, "iblip_vision_batch_size"), 1);

  auto again = TinyRequest("what is in the picture", 8);
  auto embedding = cache.FindEmbedding("image-1", qformer_ids);
  ASSERT_TRUE(embedding.has_value());
  again->image = *embedding;
  again->pixels = model::PixelValues();
  auto hit = Submit(engine, again);
  hit->Wait();
  ASSERT_TRUE(hit->status.ok()) << hit->status;
  EXPECT_EQ(hit->Tokens(), miss->Tokens());

  auto follow_up = TinyRequest("describe", 8);
  follow_up->image_hash = "image-1";
  auto vision = cache.FindVision("image-1");
  ASSERT_TRUE(vision.has_value());
  follow_up->vision = *vision;
  follow_up->pixels = model::PixelValues();
  auto from_cache = Submit(engine, follow_up);
  from_cache->Wait();
  ASSERT_TRUE(from_cache->status.ok()) << from_cache->status;
  auto fresh = Submit(engine, TinyRequest("describe", 8));
  fresh->Wait();
  EXPECT_EQ(from_cache->Tokens(), fresh->Tokens());
  // Two vision-encoder batches for three requests on image-1 plus one other.
  EXPECT_EQ(MetricValue(metrics, "iblip_vision_batch_size"), 3);
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
        f.manifest, model::RuntimeOptions{testing::TestDevice(), 1}));
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
    // The stop ids the server uses (the package's), unless the case passed
    // its own to generate (batch2: eos 2).
    const std::vector<int32_t> eos =
        kwargs.contains("eos_token_id")
            ? std::vector<int32_t>{kwargs["eos_token_id"].get<int32_t>()}
            : f.manifest.eos_token_ids;
    Metrics metrics;
    auto running = MakeEngine(*f.model, eos, metrics);
    Engine& engine = *running.engine;
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
                        Submit(engine, request));  // rows run in one batch
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

// Every case of every fixture checkpoint (the eos232/eos156 ones end at EOS
// in several modes).
std::vector<ParityCase> ParityCases() {
  std::vector<ParityCase> cases;
  for (const std::string checkpoint :
       {"tiny-llama", "tiny-t5", "tiny-llama-eos232", "tiny-t5-eos156"}) {
    const fs::path dir =
        fs::path(testing::FixturesDir()) / "cases" / checkpoint;
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir))
      names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    for (const auto& name : names) cases.push_back({checkpoint, name});
  }
  return cases;
}

TEST(EngineParityCoverage, CasesEndingAtEosAreIncluded) {
  const auto cases = ParityCases();
  EXPECT_GE(cases.size(), 16u);
  EXPECT_GE(std::count_if(cases.begin(), cases.end(),
                          [](const ParityCase& c) {
                            return c.checkpoint == "tiny-t5-eos156";
                          }),
            3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineParityTest,
                         ::testing::ValuesIn(ParityCases()),
                         [](const ::testing::TestParamInfo<ParityCase>& info) {
                           return testing::FixtureCaseName(info.param.checkpoint,
                                                           info.param.name);
                         });

}  // namespace
}  // namespace iblip::server
