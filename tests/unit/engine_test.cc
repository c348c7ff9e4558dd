// The engine on the tiny model: greedy determinism, seeded sampling,
// cancellation, deadlines, admission limits and stop sequences.
#include "server/engine.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "tests/unit/test_package.h"

namespace iblip::server {
namespace {

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
  bool done = false;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
};

class EngineTest : public ::testing::Test {
 protected:
  EngineTest()
      : engine_(*SharedTinyModel().model, *SharedTinyModel().lm_tokenizer,
                SharedTinyModel().manifest.eos_token_ids, metrics_,
                Engine::Options{2}) {
    engine_.Start();
  }

  std::shared_ptr<GenerationRequest> MakeRequest(const std::string& prompt,
                                                 int max_new_tokens) {
    const auto& tiny = SharedTinyModel();
    auto request = std::make_shared<GenerationRequest>();
    request->request_id = "test";
    request->arrival = absl::Now();
    request->pixels.size = tiny.manifest.image.size;
    request->pixels.chw.assign(
        3ull * request->pixels.size * request->pixels.size, 0.1f);
    request->prompt_ids = tiny.lm_tokenizer->EncodePrompt(prompt);
    request->qformer_ids = tiny.qformer_tokenizer->Encode(prompt);
    request->settings.max_new_tokens = max_new_tokens;
    request->settings.seed = 5;
    return request;
  }

  std::shared_ptr<RecordingSink> Run(
      std::shared_ptr<GenerationRequest> request) {
    auto sink = std::make_shared<RecordingSink>();
    request->sink = sink;
    EXPECT_TRUE(engine_.Admit().ok());
    engine_.Submit(request);
    sink->Wait();
    return sink;
  }

  Metrics metrics_;
  Engine engine_;
};

TEST_F(EngineTest, GreedyIsDeterministicAndReportsUsage) {
  auto a = Run(MakeRequest("what is in the picture", 12));
  auto b = Run(MakeRequest("what is in the picture", 12));
  ASSERT_TRUE(a->status.ok()) << a->status;
  EXPECT_FALSE(a->Tokens().empty());
  EXPECT_EQ(a->Tokens(), b->Tokens());
  EXPECT_EQ(a->Text(), SharedTinyModel().lm_tokenizer->Decode(a->Tokens()));
  EXPECT_EQ(a->usage.generated_tokens, static_cast<int>(a->Tokens().size()));
  EXPECT_EQ(a->usage.image_tokens, SharedTinyModel().manifest.num_query_tokens);
  EXPECT_GT(a->usage.prompt_tokens, 1);
  const FinishReason last = a->deltas.back().finish_reason;
  EXPECT_TRUE(last == FinishReason::kStop || last == FinishReason::kLength);
  if (last == FinishReason::kLength) {
    EXPECT_EQ(a->Tokens().size(), 12u);
  } else {
    EXPECT_EQ(a->Tokens().back(), 2);
  }
}

TEST_F(EngineTest, SeededSamplingIsReproducibleAndSequencesDiffer) {
  auto make = [&] {
    auto request = MakeRequest("describe", 16);
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

TEST_F(EngineTest, CancelStopsWithinOneStep) {
  auto request = MakeRequest("describe", 200);
  auto sink = std::make_shared<RecordingSink>();
  sink->on_delta = [request](const SequenceDelta&) {
    request->cancelled.store(true);
  };
  request->sink = sink;
  ASSERT_TRUE(engine_.Admit().ok());
  engine_.Submit(request);
  sink->Wait();
  EXPECT_EQ(sink->status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(sink->deltas.size(), 1u);
}

TEST_F(EngineTest, ExpiredDeadlineIsDeadlineExceeded) {
  auto request = MakeRequest("describe", 10);
  request->deadline = absl::Now() - absl::Seconds(1);
  auto sink = Run(request);
  EXPECT_EQ(sink->status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(sink->deltas.empty());
}

TEST_F(EngineTest, AdmissionIsBoundedAndReleased) {
  ASSERT_TRUE(engine_.Admit().ok());
  ASSERT_TRUE(engine_.Admit().ok());
  EXPECT_EQ(engine_.Admit().code(), absl::StatusCode::kResourceExhausted);
  engine_.CancelAdmission();
  engine_.CancelAdmission();
  EXPECT_TRUE(engine_.WaitIdle(absl::Seconds(5)));
  EXPECT_TRUE(engine_.Admit().ok());
  engine_.CancelAdmission();
  engine_.BeginDrain();
  EXPECT_EQ(engine_.Admit().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, StopSequenceEndsTheSequence) {
  auto reference = Run(MakeRequest("what is in the picture", 12));
  const std::string text = reference->Text();
  ASSERT_GE(text.size(), 4u)
      << "the tiny model's greedy text is too short for this test";
  auto request = MakeRequest("what is in the picture", 12);
  request->settings.stop_sequences = {text.substr(2, 2)};
  auto stopped = Run(request);
  ASSERT_TRUE(stopped->status.ok());
  EXPECT_EQ(stopped->deltas.back().finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(stopped->Text(), text.substr(0, text.find(text.substr(2, 2))));
}

}  // namespace
}  // namespace iblip::server
