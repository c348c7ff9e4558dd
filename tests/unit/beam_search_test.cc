// BeamSearch's bookkeeping of finished hypotheses against Hugging Face's
// BeamSearchScorer (transformers 4.40), on hand-made logits.
#include "model/runtime/beam_search.h"

#include <gtest/gtest.h>

#include <cmath>

namespace iblip::model {
namespace {

constexpr int32_t kEos = 2;

// log_softmax of one row.
std::vector<float> LogProbs(const std::vector<float>& logits) {
  double sum = 0;
  for (float x : logits) sum += std::exp(x);
  std::vector<float> out;
  for (float x : logits) out.push_back(x - static_cast<float>(std::log(sum)));
  return out;
}

BeamSearchParams Params(int num_beams, int max_new_tokens) {
  BeamSearchParams params;
  params.num_beams = num_beams;
  params.max_new_tokens = max_new_tokens;
  params.eos_token_ids = {kEos};
  return params;
}

// A hypothesis's length counts its EOS: ending at the first step scores
// logp(EOS) / 1, not / 0.
TEST(BeamSearchTest, AHypothesisLengthCountsItsEos) {
  BeamSearch search(Params(2, 5));
  const std::vector<float> first = {0.0f, 1.0f, 3.0f};  // EOS most likely
  search.Advance({first, first});
  // Two more steps where every beam ends with EOS.
  const std::vector<float> ending = {0.0f, 0.0f, 6.0f};
  while (!search.done()) search.Advance({ending, ending});
  const auto best = search.Finalize();
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].tokens, std::vector<int32_t>{kEos});
  EXPECT_TRUE(best[0].ended_with_eos);
  EXPECT_NEAR(best[0].score, LogProbs(first)[kEos], 1e-5);
}

// early_stopping false: done when no live beam can beat the worst kept
// hypothesis, judged at the length the next token gives.
TEST(BeamSearchTest, StopsWhenNoLiveBeamCanBeatTheKeptHypotheses) {
  BeamSearch search(Params(2, 20));
  // Step 1: a tie; EOS ranks third (only the top num_beams may end a beam),
  // so tokens 0 and 1 start the two beams.
  search.Advance({{2.0f, 2.0f, 2.0f}, {2.0f, 2.0f, 2.0f}});
  EXPECT_FALSE(search.done());  // no hypothesis yet
  // Step 2: both beams end (EOS far ahead): two hypotheses of length 2 whose
  // scores beat anything a live beam (much less likely) can reach.
  search.Advance({{-8.0f, -8.0f, 8.0f}, {-8.0f, -8.0f, 8.0f}});
  EXPECT_TRUE(search.done());
  const auto best = search.Finalize();
  ASSERT_EQ(best.size(), 1u);
  EXPECT_TRUE(best[0].ended_with_eos);
}

// Among equal scores the hypothesis added last is returned first (Hugging
// Face sorts ascending and pops from the end).
TEST(BeamSearchTest, TiesReturnTheLaterHypothesisFirst) {
  BeamSearchParams params = Params(2, 1);
  params.num_return_sequences = 2;
  BeamSearch search(params);
  search.Advance({{1.0f, 1.0f, 0.0f}, {1.0f, 1.0f, 0.0f}});
  ASSERT_TRUE(search.done());  // max_new_tokens 1: both live beams kept
  const auto best = search.Finalize();
  ASSERT_EQ(best.size(), 2u);
  EXPECT_EQ(best[0].score, best[1].score);
  EXPECT_EQ(best[0].tokens, std::vector<int32_t>{1});
  EXPECT_EQ(best[1].tokens, std::vector<int32_t>{0});
}

}  // namespace
}  // namespace iblip::model
