#include "server/engine/scheduler.h"

#include <gtest/gtest.h>

namespace iblip::server {
namespace {

std::shared_ptr<GenerationRequest> Request(
    const std::string& id, Priority priority = Priority::kNormal,
    int prompt_tokens = 10, int beams = 1) {
  auto request = std::make_shared<GenerationRequest>();
  request->request_id = id;
  request->priority = priority;
  request->prompt_ids.assign(prompt_tokens, 7);
  request->settings.num_beams = beams;
  return request;
}

std::vector<std::string> Ids(
    const std::vector<std::shared_ptr<GenerationRequest>>& requests) {
  std::vector<std::string> ids;
  for (const auto& r : requests) ids.push_back(r->request_id);
  return ids;
}

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(SchedulerTest, VisionBatchWaitsForTheDelayUnlessFull) {
  Scheduler scheduler({/*vision_max_batch_size=*/3,
                       /*vision_max_queue_delay=*/absl::Milliseconds(5),
                       /*prefill_token_budget=*/100});
  EXPECT_EQ(scheduler.VisionBatchDue(), absl::InfiniteFuture());
  scheduler.AddToVisionQueue(Request("a"), kT0);
  scheduler.AddToVisionQueue(Request("b"), kT0 + absl::Milliseconds(1));
  EXPECT_EQ(scheduler.VisionBatchDue(), kT0 + absl::Milliseconds(5));
  EXPECT_TRUE(scheduler.TakeVisionBatch(kT0 + absl::Milliseconds(4)).empty());
  EXPECT_EQ(Ids(scheduler.TakeVisionBatch(kT0 + absl::Milliseconds(5))),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(scheduler.vision_waiting(), 0);

  // A full batch goes at once, and only max_batch_size of them.
  for (const char* id : {"c", "d", "e", "f"})
    scheduler.AddToVisionQueue(Request(id), kT0);
  EXPECT_LE(scheduler.VisionBatchDue(), kT0);
  EXPECT_EQ(Ids(scheduler.TakeVisionBatch(kT0)),
            (std::vector<std::string>{"c", "d", "e"}));
  EXPECT_EQ(scheduler.vision_waiting(), 1);
}

TEST(SchedulerTest, ZeroDelayRunsAPartialBatchAtOnce) {
  Scheduler scheduler({8, absl::ZeroDuration(), 100});
  scheduler.AddToVisionQueue(Request("a"), kT0);
  EXPECT_EQ(Ids(scheduler.TakeVisionBatch(kT0)),
            (std::vector<std::string>{"a"}));
}

TEST(SchedulerTest, HigherPrioritiesFillTheVisionBatchFirst) {
  Scheduler scheduler({2, absl::ZeroDuration(), 100});
  scheduler.AddToVisionQueue(Request("low", Priority::kLow), kT0);
  scheduler.AddToVisionQueue(Request("normal", Priority::kNormal), kT0);
  scheduler.AddToVisionQueue(Request("high", Priority::kHigh), kT0);
  EXPECT_EQ(Ids(scheduler.TakeVisionBatch(kT0)),
            (std::vector<std::string>{"high", "normal"}));
  EXPECT_EQ(Ids(scheduler.TakeVisionBatch(kT0)),
            (std::vector<std::string>{"low"}));
}

TEST(SchedulerTest, PrefillsStopAtTheTokenBudgetButAlwaysStartOne) {
  Scheduler scheduler({8, absl::ZeroDuration(), /*prefill_token_budget=*/25});
  scheduler.AddToPrefillQueue(Request("a", Priority::kNormal, 10));
  scheduler.AddToPrefillQueue(Request("b", Priority::kNormal, 10));
  scheduler.AddToPrefillQueue(Request("c", Priority::kNormal, 10));
  scheduler.AddToPrefillQueue(Request("d", Priority::kNormal, 10));
  // 10 + 10 + 10 passes 25 after the third: the budget is checked before.
  EXPECT_EQ(Ids(scheduler.TakePrefills(16, 16)),
            (std::vector<std::string>{"a", "b", "c"}));
  scheduler.AddToPrefillQueue(Request("huge", Priority::kNormal, 500));
  EXPECT_EQ(Ids(scheduler.TakePrefills(16, 16)),
            (std::vector<std::string>{"d", "huge"}));
  scheduler.AddToPrefillQueue(Request("alone", Priority::kNormal, 500));
  EXPECT_EQ(Ids(scheduler.TakePrefills(16, 16)),
            (std::vector<std::string>{"alone"}));
}

TEST(SchedulerTest, PrefillsNeedFreeSlotsAndKeepStrictPriority) {
  Scheduler scheduler({8, absl::ZeroDuration(), 1000});
  scheduler.AddToPrefillQueue(Request("low", Priority::kLow, 5));
  scheduler.AddToPrefillQueue(Request("beams", Priority::kHigh, 5, 4));
  // The high-priority beam search needs 4 slots: 3 free blocks everything.
  EXPECT_TRUE(scheduler.TakePrefills(3, 16).empty());
  EXPECT_EQ(Ids(scheduler.TakePrefills(5, 16)),
            (std::vector<std::string>{"beams", "low"}));
  EXPECT_TRUE(scheduler.empty());
}

TEST(SchedulerTest, ARequestThatCanNeverFitIsHandedOverNotLeftBlocking) {
  Scheduler scheduler({8, absl::ZeroDuration(), 1000});
  scheduler.AddToPrefillQueue(Request("too-wide", Priority::kNormal, 5, 32));
  scheduler.AddToPrefillQueue(Request("next", Priority::kNormal, 5));
  EXPECT_EQ(Ids(scheduler.TakePrefills(1, 16)),
            (std::vector<std::string>{"too-wide", "next"}));
}

TEST(SchedulerTest, TakeAllEmptiesBothStages) {
  Scheduler scheduler({8, absl::Seconds(1), 1000});
  scheduler.AddToVisionQueue(Request("v"), kT0);
  scheduler.AddToPrefillQueue(Request("p"));
  EXPECT_EQ(scheduler.TakeAll().size(), 2u);
  EXPECT_TRUE(scheduler.empty());
  EXPECT_EQ(scheduler.VisionBatchDue(), absl::InfiniteFuture());
}

}  // namespace
}  // namespace iblip::server
