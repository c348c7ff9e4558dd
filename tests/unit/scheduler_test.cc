// The step planner, without a model or an engine: batching, chunking,
// budgets, priorities and preemption as Plan() decides them.
#include "server/engine/scheduler.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace iblip::server {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);
const std::vector<int32_t> kEos = {0};

class RowsTensor final : public model::TensorHandle {
 public:
  explicit RowsTensor(int rows) : rows_(rows) {}
  uint64_t bytes() const override { return 0; }
  int rows() const override { return rows_; }

 private:
  int rows_;
};

// Logits whose greedy choice is token 3 (not the EOS, 0).
std::vector<float> FirstLogits() {
  std::vector<float> logits(8, 0.0f);
  logits[3] = 1.0f;
  return logits;
}

class NullSink final : public TokenSink {
 public:
  void OnTokens(TokenDelta) override {}
  void OnComplete(const absl::Status&, const UsageStats&) override {}
};

class SchedulerTest : public ::testing::Test {
 protected:
  // A request whose image is encoded already (ready for prefill) unless
  // `encoded` is false.
  SequenceGroup* Group(int prompt_tokens, Priority priority = Priority::kNormal,
                       bool encoded = true, absl::Duration arrival = {}) {
    auto request = std::make_shared<GenerationRequest>();
    request->priority = priority;
    request->arrival = kT0 + arrival;
    request->prompt_ids.assign(prompt_tokens, 5);
    request->settings.max_new_tokens = 8;
    request->sink = std::make_shared<NullSink>();
    if (encoded) {
      request->image = model::ImageEmbedding(std::make_shared<RowsTensor>(4));
    } else {
      request->pixels.size = 4;
    }
    groups_.push_back(std::make_unique<SequenceGroup>(
        groups_.size(), request, kEos, false, 0, metrics_, clock_));
    return groups_.back().get();
  }
  // A scheduler (the fixture keeps it) whose decode interval is 50 ms, with
  // one stream decoding.
  Scheduler& WithAStream(Scheduler::Options options) {
    options.decode_interval = absl::Milliseconds(50);
    schedulers_.push_back(
        std::make_unique<Scheduler>(options, blocks_, 6, false));
    StartStream(*schedulers_.back());
    return *schedulers_.back();
  }
  // Eight images wait (a batch holds 8) beside a stream whose decode step
  // alone takes 600 ms; an encoder layer costs 25 ms an image, the
  // Q-Former 50 ms an image.
  StepPlan PlanEightImagesBesideA600msDecodeStep(Scheduler& scheduler) {
    for (int i = 0; i < 8; ++i)
      scheduler.AddToVision(Group(3, Priority::kNormal, false), kT0);
    StepCosts costs;
    costs.decode_step = absl::Milliseconds(600);
    costs.vision_layer_per_image = absl::Milliseconds(25);
    costs.query_per_image = absl::Milliseconds(50);
    return scheduler.Plan(kT0, costs);
  }
  // A stream that has prefilled and decodes from now on.
  void StartStream(Scheduler& scheduler) {
    SequenceGroup* running = Group(2);
    scheduler.AddToPrefill(running);
    Done(scheduler.Plan(kT0, {}).prefills[0]);
    running->Start(FirstLogits(), blocks_);
    scheduler.StartRunning(running);
  }
  // Runs a prefill piece's bookkeeping as the engine would.
  void Done(const PrefillPiece& piece) {
    piece.group->PrefillDone(piece.item, piece.end, blocks_);
  }

  FakeClock clock_{kT0};
  Metrics metrics_;
  KvBlockManager blocks_{64, 4};
  std::vector<std::unique_ptr<SequenceGroup>> groups_;
  std::vector<std::unique_ptr<Scheduler>> schedulers_;  // before the groups go
};

TEST_F(SchedulerTest, AVisionBatchWaitsForTheDelayUnlessFull) {
  Scheduler::Options options;
  options.vision_max_batch_size = 3;
  options.vision_max_queue_delay = absl::Milliseconds(5);
  Scheduler scheduler(options, blocks_, 6, false);
  EXPECT_EQ(scheduler.VisionDue(), absl::InfiniteFuture());
  scheduler.AddToVision(Group(3, Priority::kNormal, false), kT0);
  scheduler.AddToVision(Group(3, Priority::kNormal, false),
                        kT0 + absl::Milliseconds(1));
  EXPECT_EQ(scheduler.VisionDue(), kT0 + absl::Milliseconds(5));
  EXPECT_TRUE(scheduler.Plan(kT0 + absl::Milliseconds(4), {}).vision.empty());
  const StepPlan plan = scheduler.Plan(kT0 + absl::Milliseconds(5), {});
  EXPECT_TRUE(plan.vision.begin);
  EXPECT_EQ(plan.vision.layers_end, 6);  // nothing decodes: the whole encoder
  EXPECT_TRUE(plan.vision.query);
  EXPECT_EQ(scheduler.vision_batch().size(), 2u);
}

TEST_F(SchedulerTest, WithNothingDecodingAPromptPrefillsWhole) {
  Scheduler scheduler({}, blocks_, 6, false);
  SequenceGroup* group = Group(40);
  scheduler.AddToPrefill(group);
  const StepPlan plan = scheduler.Plan(kT0, {});
  ASSERT_EQ(plan.prefills.size(), 1u);
  EXPECT_EQ(plan.prefills[0].item.start, 0);
  EXPECT_EQ(plan.prefills[0].end, 44);  // 4 soft prompt rows + 40 tokens
  EXPECT_EQ(group->table(0).blocks.size(), 11u);
}

TEST_F(SchedulerTest, WhileStreamsDecodeOtherWorkFitsTheInterval) {
  Scheduler::Options options;
  options.min_prefill_chunk = 4;
  Scheduler& scheduler = WithAStream(options);

  SequenceGroup* waiting = Group(200);
  scheduler.AddToPrefill(waiting);
  StepCosts costs;
  costs.decode_step = absl::Milliseconds(20);
  costs.prefill_per_position = absl::Milliseconds(1);
  const StepPlan plan = scheduler.Plan(kT0, costs);
  ASSERT_EQ(plan.decode.size(), 1u);
  ASSERT_EQ(plan.prefills.size(), 1u);
  // 50 ms - 20 ms of decode leaves 30 positions at 1 ms each.
  EXPECT_EQ(plan.prefills[0].end - plan.prefills[0].item.start, 30);
}

// A 7B model on two cores: one decode step (600 ms) is far past the 50 ms
// interval. The step may still stretch to 200% of it, so admission keeps
// going at a pace the streams can see, not one layer of one image a step.
TEST_F(SchedulerTest, ADecodeStepPastTheIntervalStillLeavesOtherWorkItsShare) {
  Scheduler& scheduler = WithAStream({});
  const StepPlan plan = PlanEightImagesBesideA600msDecodeStep(scheduler);
  // 600 ms of budget: the whole batch of 8 (its Q-Former pass takes 400
  // ms), and 3 of the 6 layers at 200 ms each.
  EXPECT_EQ(scheduler.vision_batch().size(), 8u);
  EXPECT_EQ(plan.vision.layers_end - plan.vision.layers_begin, 3);
}

TEST_F(SchedulerTest, AtAStretchOf100TheIntervalAloneBoundsTheStep) {
  Scheduler::Options options;
  options.max_step_stretch_percent = 100;
  Scheduler& scheduler = WithAStream(options);
  const StepPlan plan = PlanEightImagesBesideA600msDecodeStep(scheduler);
  // No budget left: the least piece, one image and one layer.
  EXPECT_EQ(scheduler.vision_batch().size(), 1u);
  EXPECT_EQ(plan.vision.layers_end - plan.vision.layers_begin, 1);
}

TEST_F(SchedulerTest, VisionWaitsWhileAPrefillChunkTakesTheStepsBudget) {
  Scheduler& scheduler = WithAStream({});

  scheduler.AddToPrefill(Group(200));
  scheduler.AddToVision(Group(3, Priority::kNormal, false), kT0);
  StepCosts costs;
  costs.decode_step = absl::Milliseconds(20);
  costs.prefill_per_position = absl::Milliseconds(1);
  costs.vision_layer_per_image = absl::Milliseconds(5);
  costs.query_per_image = absl::Milliseconds(5);
  const StepPlan plan = scheduler.Plan(kT0, costs);
  ASSERT_EQ(plan.prefills.size(), 1u);  // 30 positions: the whole budget
  EXPECT_TRUE(plan.vision.empty());
  EXPECT_TRUE(scheduler.vision_batch().empty());
}

TEST_F(SchedulerTest, WhileStreamsDecodeTheQFormerPassBoundsTheVisionBatch) {
  Scheduler::Options options;
  options.vision_max_batch_size = 8;
  Scheduler& scheduler = WithAStream(options);

  for (int i = 0; i < 6; ++i)
    scheduler.AddToVision(Group(3, Priority::kNormal, false), kT0);
  StepCosts costs;
  costs.decode_step = absl::Milliseconds(20);
  costs.vision_layer_per_image = absl::Milliseconds(5);  // 6 would fit 30 ms
  costs.query_per_image = absl::Milliseconds(12);        // 2 fit
  const StepPlan plan = scheduler.Plan(kT0, costs);
  EXPECT_TRUE(plan.vision.begin);
  EXPECT_EQ(scheduler.vision_batch().size(), 2u);
}

TEST_F(SchedulerTest, PrefillFollowsStrictPriority) {
  Scheduler::Options options;
  options.max_running_sequences = 1;
  Scheduler scheduler(options, blocks_, 6, false);
  SequenceGroup* low = Group(3, Priority::kLow);
  SequenceGroup* high = Group(3, Priority::kHigh, true, absl::Seconds(1));
  scheduler.AddToPrefill(low);
  scheduler.AddToPrefill(high);
  const StepPlan plan = scheduler.Plan(kT0, {});
  ASSERT_EQ(plan.prefills.size(), 1u);  // one row only
  EXPECT_EQ(plan.prefills[0].group, high);
}

TEST_F(SchedulerTest, WhenBlocksRunOutTheLowestPriorityNewestIsPreempted) {
  KvBlockManager blocks(6, 4);
  Scheduler scheduler({}, blocks, 6, false);
  // Three requests of 8 positions each (2 blocks): the pool holds them all.
  std::vector<SequenceGroup*> groups = {
      Group(4, Priority::kNormal, true, absl::Seconds(0)),
      Group(4, Priority::kLow, true, absl::Seconds(1)),
      Group(4, Priority::kLow, true, absl::Seconds(2))};
  for (SequenceGroup* group : groups) scheduler.AddToPrefill(group);
  const StepPlan start = scheduler.Plan(kT0, {});
  ASSERT_EQ(start.prefills.size(), 3u);
  for (const PrefillPiece& piece : start.prefills) {
    piece.group->PrefillDone(piece.item, piece.end, blocks);
    piece.group->Start(FirstLogits(), blocks);
    scheduler.StartRunning(piece.group);
  }
  EXPECT_EQ(blocks.free_blocks(), 0);
  // Every sequence's next position (8) needs a new block: one request must
  // give its blocks up, the low-priority one that arrived last.
  const StepPlan plan = scheduler.Plan(kT0, {});
  ASSERT_EQ(plan.preempted.size(), 1u);
  EXPECT_EQ(plan.preempted[0], groups[2]);
  EXPECT_EQ(plan.decode.size(), 2u);
  EXPECT_EQ(groups[2]->phase(), SequenceGroup::Phase::kPrefill);
  EXPECT_EQ(groups[2]->preemptions(), 1);
}

}  // namespace
}  // namespace iblip::server
