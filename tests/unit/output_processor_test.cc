// The request side of a generation: token ids from the engine become text
// deltas on a worker thread, in order, with stop sequences and usage.
#include "server/pipeline/output_processor.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "common/mutex.h"
#include "tests/unit/test_package.h"

namespace iblip::server {
namespace {

class CollectingSink final : public ResponseSink {
 public:
  void OnDelta(SequenceDelta delta) override {
    MutexLock lock(&mutex_);
    deltas_.push_back(std::move(delta));
  }
  void OnComplete(const absl::Status& status, const UsageStats& usage) override {
    MutexLock lock(&mutex_);
    status_ = status;
    usage_ = usage;
    done_ = true;
    changed_.SignalAll();
  }
  void Wait() {
    MutexLock lock(&mutex_);
    while (!done_) changed_.Wait(&mutex_);
  }
  std::string Text(int index = 0) {
    MutexLock lock(&mutex_);
    std::string text;
    for (const auto& d : deltas_) {
      if (d.index == index) text += d.text;
    }
    return text;
  }
  FinishReason Finish(int index = 0) {
    MutexLock lock(&mutex_);
    FinishReason reason = FinishReason::kNone;
    for (const auto& d : deltas_) {
      if (d.index == index && d.finish_reason != FinishReason::kNone)
        reason = d.finish_reason;
    }
    return reason;
  }
  int generated_tokens() {
    MutexLock lock(&mutex_);
    return usage_.generated_tokens;
  }

 private:
  Mutex mutex_;
  CondVar changed_;
  std::vector<SequenceDelta> deltas_ ABSL_GUARDED_BY(mutex_);
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
  UsageStats usage_ ABSL_GUARDED_BY(mutex_);
  bool done_ ABSL_GUARDED_BY(mutex_) = false;
};

double Counter(Metrics& metrics, const std::string& name,
               const std::string& label) {
  for (const auto& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      if (!metric.label.empty() && metric.label[0].value == label)
        return metric.counter.value;
    }
  }
  return 0;
}

class OutputProcessorTest : public ::testing::Test {
 protected:
  const model::LmTokenizer& tokenizer() {
    return *testing::SharedTinyTokenizers().lm_tokenizer;
  }
  std::shared_ptr<OutputProcessor> Make(GenerationSettings settings,
                                        std::shared_ptr<CollectingSink> sink) {
    request_->settings = settings;
    return OutputProcessor::Create(request_, settings, tokenizer(), sink,
                                   pool_, metrics_);
  }

  std::shared_ptr<GenerationRequest> request_ =
      std::make_shared<GenerationRequest>();
  Metrics metrics_;
  WorkerPool pool_{2};
};

TEST_F(OutputProcessorTest, TokensBecomeTheDecodedTextInOrder) {
  const std::vector<int32_t> ids =
      tokenizer().EncodePrompt("a red circle and a blue square, left of it");
  GenerationSettings settings;
  settings.max_new_tokens = 100;
  auto sink = std::make_shared<CollectingSink>();
  auto processor = Make(settings, sink);
  for (size_t i = 1; i < ids.size(); ++i) {  // skip BOS
    TokenDelta delta;
    delta.token_ids = {ids[i]};
    if (i + 1 == ids.size()) delta.finish_reason = FinishReason::kLength;
    processor->OnTokens(std::move(delta));
  }
  UsageStats usage;
  usage.generated_tokens = static_cast<int>(ids.size()) - 1;
  processor->OnComplete(absl::OkStatus(), usage);
  sink->Wait();
  EXPECT_EQ(sink->Text(),
            tokenizer().Decode(std::vector<int32_t>(ids.begin() + 1, ids.end())));
  EXPECT_EQ(sink->Finish(), FinishReason::kLength);
  EXPECT_EQ(Counter(metrics_, "iblip_sequences_total", "length"), 1);
}

TEST_F(OutputProcessorTest, AStopSequenceEndsTheTextAndTellsTheEngine) {
  const std::vector<int32_t> ids =
      tokenizer().EncodePrompt("one two three four five six");
  GenerationSettings settings;
  settings.max_new_tokens = 100;
  settings.num_return_sequences = 2;
  settings.stop_sequences = {"three"};
  auto sink = std::make_shared<CollectingSink>();
  auto processor = Make(settings, sink);
  for (size_t i = 1; i < ids.size(); ++i) {
    for (int index : {0, 1}) {
      TokenDelta delta;
      delta.index = index;
      delta.token_ids = {ids[i]};
      processor->OnTokens(std::move(delta));
    }
  }
  processor->OnComplete(absl::OkStatus(), UsageStats{});
  sink->Wait();
  EXPECT_EQ(sink->Text(0), "one two ");
  EXPECT_EQ(sink->Text(1), "one two ");
  EXPECT_EQ(sink->Finish(0), FinishReason::kStopSequence);
  EXPECT_EQ(request_->stop_sequence_hits.load(), 3u);  // both sequences
  // Usage counts the tokens up to the stop, not what the engine made after.
  EXPECT_LT(sink->generated_tokens(), 2 * static_cast<int>(ids.size() - 1));
  EXPECT_GT(sink->generated_tokens(), 0);
  EXPECT_EQ(Counter(metrics_, "iblip_sequences_total", "stop_sequence"), 2);
}

TEST_F(OutputProcessorTest, CancelledSequencesAreCountedNotSent) {
  GenerationSettings settings;
  auto sink = std::make_shared<CollectingSink>();
  auto processor = Make(settings, sink);
  TokenDelta token;
  token.token_ids = {tokenizer().EncodePrompt("hello")[1]};
  processor->OnTokens(token);
  TokenDelta cancelled;
  cancelled.finish_reason = FinishReason::kCancelled;
  processor->OnTokens(cancelled);
  processor->OnComplete(absl::CancelledError("cancelled by the client"),
                        UsageStats{});
  sink->Wait();
  EXPECT_EQ(sink->Finish(), FinishReason::kNone);  // no finish delta sent
  EXPECT_EQ(Counter(metrics_, "iblip_sequences_total", "cancelled"), 1);
}

}  // namespace
}  // namespace iblip::server
