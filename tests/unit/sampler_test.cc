#include "model/runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>

namespace iblip::model {
namespace {

SamplingParams Greedy() {
  SamplingParams p;
  p.eos_token_ids = {0};
  return p;
}

TEST(SamplerTest, GreedyPicksTheFirstMaximum) {
  Sampler sampler(Greedy(), 1);
  std::vector<float> logits = {0.1f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(sampler.Next(logits, {}), 1);
}

TEST(SamplerTest, RepetitionPenaltyFollowsHuggingFace) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  Sampler sampler(p, 1);
  // Seen token 1 (positive logit) is divided, seen token 2 (negative)
  // multiplied.
  std::vector<float> logits = {1.0f, 3.0f, -1.0f, 2.0f};
  EXPECT_EQ(sampler.Next(logits, {1, 2, 1}), 3);
  EXPECT_FLOAT_EQ(logits[1], 1.5f);
  EXPECT_FLOAT_EQ(logits[2], -2.0f);
  EXPECT_FLOAT_EQ(logits[3], 2.0f);
}

TEST(SamplerTest, MinNewTokensMasksEos) {
  SamplingParams p = Greedy();
  p.min_new_tokens = 2;
  Sampler sampler(p, 1);
  std::vector<float> logits = {9.0f, 1.0f};
  EXPECT_EQ(sampler.Next(logits, {5}), 1);  // 1 token so far < 2: EOS masked
  logits = {9.0f, 1.0f};
  EXPECT_EQ(sampler.Next(logits, {5, 6}), 0);  // reached: EOS allowed
}

TEST(SamplerTest, SameSeedSameSamplesDifferentSeedDifferentSamples) {
  SamplingParams p = Greedy();
  p.temperature = 1.0f;
  p.top_k = 0;
  auto draw = [&](uint64_t seed) {
    Sampler sampler(p, seed);
    std::vector<int32_t> ids;
    for (int i = 0; i < 32; ++i) {
      std::vector<float> logits(16, 0.0f);  // uniform
      ids.push_back(sampler.Next(logits, {}));
    }
    return ids;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  SamplingParams p = Greedy();
  p.temperature = 5.0f;
  p.top_k = 1;
  Sampler top_k(p, 3);
  p.top_k = 0;
  p.top_p = 1e-6f;
  Sampler top_p(p, 3);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> a = {0.0f, 0.5f, 0.4f};
    std::vector<float> b = a;
    EXPECT_EQ(top_k.Next(a, {}), 1);
    EXPECT_EQ(top_p.Next(b, {}), 1);
  }
}

TEST(SamplerTest, SamplingFollowsTheDistribution) {
  SamplingParams p = Greedy();
  p.temperature = 1.0f;
  p.top_k = 0;
  Sampler sampler(p, 11);
  // p(1) = e^1 / (e^0 + e^1) ~= 0.731.
  int ones = 0;
  constexpr int kDraws = 4000;
  for (int i = 0; i < kDraws; ++i) {
    std::vector<float> logits = {0.0f, 1.0f};
    ones += sampler.Next(logits, {}) == 1;
  }
  EXPECT_NEAR(ones / static_cast<double>(kDraws),
              std::exp(1.0) / (1 + std::exp(1.0)), 0.03);
}

// How often each id is drawn from `logits` (copied per draw) in `draws`.
std::vector<int> Counts(const SamplingParams& params,
                        const std::vector<float>& logits, int draws) {
  Sampler sampler(params, 5);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    std::vector<float> row = logits;
    ++counts[sampler.Next(row, {})];
  }
  return counts;
}

TEST(SamplerTest, TemperatureReshapesTheDistribution) {
  SamplingParams p = Greedy();
  p.temperature = 2.0f;
  p.top_k = 0;
  constexpr int kDraws = 4000;
  // p(1) = e^(1/2) / (1 + e^(1/2)) ~= 0.622 (0.731 if the temperature were
  // ignored); 4000 draws: 0.03 is over 3 standard deviations.
  const auto counts = Counts(p, {0.0f, 1.0f}, kDraws);
  EXPECT_NEAR(counts[1] / static_cast<double>(kDraws),
              std::exp(0.5) / (1 + std::exp(0.5)), 0.03);
}

TEST(SamplerTest, TopKAndTopPKeepExactlyTheirTokens) {
  SamplingParams p = Greedy();
  p.temperature = 1.0f;
  p.top_k = 2;  // ids 1 and 2; 3 (nearly as likely) and 0 never
  auto counts = Counts(p, {0.0f, 3.0f, 2.9f, 2.8f}, 2000);
  EXPECT_EQ(counts[0] + counts[3], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);

  p.top_k = 0;
  p.top_p = 0.6f;  // probabilities 0.5, 0.3, 0.2: the nucleus is {0, 1}
  counts = Counts(p, {std::log(0.5f), std::log(0.3f), std::log(0.2f)}, 2000);
  EXPECT_EQ(counts[2], 0);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
}

}  // namespace
}  // namespace iblip::model
