#include "model/runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <unordered_set>

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

// The implementation the partial-selection sampler replaced (it sorted the
// whole vocabulary per token), kept as the reference for its semantics.
class FullSortSampler {
 public:
  FullSortSampler(SamplingParams params, uint64_t seed)
      : params_(std::move(params)), rng_(seed) {}

  int32_t Next(std::vector<float>& logits,
               const std::vector<int32_t>& generated) {
    if (params_.repetition_penalty != 1.0f) {
      for (int32_t id :
           std::unordered_set<int32_t>(generated.begin(), generated.end())) {
        if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
        float& logit = logits[id];
        logit = logit < 0 ? logit * params_.repetition_penalty
                          : logit / params_.repetition_penalty;
      }
    }
    if (static_cast<int>(generated.size()) < params_.min_new_tokens) {
      for (int32_t eos : params_.eos_token_ids)
        logits[eos] = -std::numeric_limits<float>::infinity();
    }
    if (params_.temperature <= 0.0f) {
      return static_cast<int32_t>(
          std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    for (float& logit : logits) logit /= params_.temperature;
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b];
    });
    size_t keep = order.size();
    if (params_.top_k > 0) {
      keep = std::min(keep, static_cast<size_t>(params_.top_k));
      const float kth = logits[order[keep - 1]];
      while (keep < order.size() && logits[order[keep]] == kth) ++keep;
    }
    const float max_logit = logits[order[0]];
    std::vector<double> probs(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) {
      probs[i] = std::exp(static_cast<double>(logits[order[i]]) - max_logit);
      total += probs[i];
    }
    if (params_.top_p < 1.0f) {
      double cumulative = 0;
      size_t nucleus = 0;
      while (nucleus < keep) {
        cumulative += probs[nucleus] / total;
        ++nucleus;
        if (cumulative >= params_.top_p) break;
      }
      keep = nucleus;
      total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
    }
    if (!(total > 0)) return order[0];
    std::uniform_real_distribution<double> uniform(0.0, total);
    double coin = uniform(rng_);
    for (size_t i = 0; i < keep; ++i) {
      coin -= probs[i];
      if (coin <= 0) return order[i];
    }
    return order[keep - 1];
  }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

// Same seed, same logits: the same ids as sorting everything, for every
// processor combination, with ties, masked ids and long sequences (the
// repetition penalty's seen set grows with them).
TEST(SamplerTest, SameIdsAsSortingTheWholeVocabulary) {
  std::mt19937 rng(21);
  int checked = 0;
  for (int vocab : {3, 40, 1000, 32000}) {
    for (int trial = 0; trial < (vocab == 32000 ? 8 : 50); ++trial) {
      SamplingParams p;
      p.eos_token_ids = {1};
      const float temperatures[] = {0.0f, 0.7f, 1.0f, 1.8f};
      p.temperature = temperatures[rng() % 4];
      const int top_ks[] = {0, 1, 5, 50, vocab, vocab + 7};
      p.top_k = top_ks[rng() % 6];
      const float top_ps[] = {1.0f, 0.95f, 0.6f, 1e-6f};
      p.top_p = top_ps[rng() % 4];
      p.repetition_penalty = rng() % 2 ? 1.0f : 1.3f;
      p.min_new_tokens = rng() % 2 ? 0 : 3;
      // sigma 0.3 spreads the mass (top-p needs most of the vocabulary);
      // quantized logits make ties.
      const float sigma = rng() % 2 ? 0.3f : 3.0f;
      const bool quantized = rng() % 3 == 0;
      const uint64_t seed = rng();
      Sampler sampler(p, seed);
      FullSortSampler reference(p, seed);
      std::normal_distribution<float> normal(0.0f, sigma);
      std::vector<int32_t> generated;
      for (int step = 0; step < 24; ++step) {
        std::vector<float> logits(vocab);
        for (float& x : logits)
          x = quantized ? std::round(normal(rng) * 2) / 2 : normal(rng);
        std::vector<float> copy = logits;
        const int32_t id = sampler.Next(logits, generated);
        ASSERT_EQ(id, reference.Next(copy, generated))
            << "vocab " << vocab << " trial " << trial << " step " << step;
        ASSERT_EQ(logits, copy);  // the same processed logits, in place
        generated.push_back(id);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, (3 * 50 + 8) * 24);
}

TEST(SamplerTest, TopKKeepsEveryIdTiedWithTheKth) {
  SamplingParams p = Greedy();
  p.temperature = 1.0f;
  p.top_k = 2;
  Sampler sampler(p, 5);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 3000; ++i) {
    std::vector<float> logits = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
    ++counts[sampler.Next(logits, {})];
  }
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[4], 0);
  for (int id : {1, 2, 3}) EXPECT_NEAR(counts[id], 1000, 150) << id;
}

TEST(SamplerTest, RepetitionPenaltyStartsOverForAnotherList) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  Sampler sampler(p, 1);
  std::vector<float> logits = {0.0f, 4.0f, 4.0f, 4.0f};
  sampler.Next(logits, {1, 2});
  EXPECT_EQ(logits, (std::vector<float>{0.0f, 2.0f, 2.0f, 4.0f}));
  logits = {0.0f, 4.0f, 4.0f, 4.0f};
  sampler.Next(logits, {3});  // shorter: a new sequence
  EXPECT_EQ(logits, (std::vector<float>{0.0f, 4.0f, 4.0f, 2.0f}));
  logits = {0.0f, 4.0f, 4.0f, 4.0f};
  sampler.Next(logits, {2, 1});  // its last seen id changed
  EXPECT_EQ(logits, (std::vector<float>{0.0f, 2.0f, 2.0f, 4.0f}));
  logits = {0.0f, 4.0f, 4.0f, 4.0f};
  sampler.Next(logits, {2, 1, 1, 3});  // grew: 3 is new, 1 counted once
  EXPECT_EQ(logits, (std::vector<float>{0.0f, 2.0f, 2.0f, 2.0f}));
}

TEST(SamplerTest, CandidatesNeededByProcessor) {
  SamplingParams p;
  p.eos_token_ids = {0, 2};
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(0), 1);  // greedy
  p.min_new_tokens = 3;
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(2), 3);  // + the masked EOS ids
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(3), 1);  // EOS allowed again
  p.temperature = 0.8f;
  p.top_k = 40;
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(0), 42);
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(5), 40);
  p.top_p = 0.9f;  // top-p after top-k: normalized over the top-k ids
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(5), 40);
  p.top_k = 0;  // top-p alone: the whole vocabulary's mass
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(5), 0);
  p.top_p = 1.0f;  // plain sampling
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(5), 0);
  p.temperature = 0.0f;
  p.repetition_penalty = 1.2f;  // penalties reorder seen ids
  EXPECT_EQ(Sampler(p, 1).CandidatesNeeded(5), 0);
}

// What a GPU runner sends for a row that needs `n` candidates: the n best
// (and -inf elsewhere), or the whole row when the n-th and (n+1)-th tie.
std::vector<float> OnlyCandidates(const std::vector<float>& logits, int n) {
  if (n <= 0 || static_cast<size_t>(n) >= logits.size()) return logits;
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  if (sorted[n - 1] == sorted[n]) return logits;
  std::vector<float> sparse(logits.size(),
                            -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] >= sorted[n - 1]) sparse[i] = logits[i];
  }
  return sparse;
}

// The device path's promise: a sampler fed only CandidatesNeeded() logits
// per step picks the ids it picks from the whole rows, same seed, with
// ties, masked EOS and every processor combination.
TEST(SamplerTest, CandidatesNeededGiveTheIdsOfTheWholeRow) {
  std::mt19937 rng(5);
  int sparse_steps = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int vocab = trial % 2 ? 50 : 1000;
    SamplingParams p;
    p.eos_token_ids = {1, 3};
    const float temperatures[] = {0.0f, 0.7f, 1.3f};
    p.temperature = temperatures[rng() % 3];
    const int top_ks[] = {0, 1, 4, 50};
    p.top_k = top_ks[rng() % 4];
    const float top_ps[] = {1.0f, 0.9f, 0.3f};
    p.top_p = top_ps[rng() % 3];
    p.repetition_penalty = rng() % 4 ? 1.0f : 1.3f;
    p.min_new_tokens = rng() % 2 ? 0 : 4;
    const bool quantized = rng() % 3 == 0;
    const uint64_t seed = rng();
    Sampler whole(p, seed), candidates(p, seed);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<int32_t> generated;
    for (int step = 0; step < 12; ++step) {
      std::vector<float> logits(vocab);
      for (float& x : logits)
        x = quantized ? std::round(normal(rng) * 2) / 2 : normal(rng);
      // The EOS ids among the best, so min_new_tokens' mask matters.
      if (step % 3 == 0) logits[1] = 20.0f;
      const int n = candidates.CandidatesNeeded(generated.size());
      std::vector<float> sent = OnlyCandidates(logits, n);
      sparse_steps += sent != logits;
      const int32_t id = whole.Next(logits, generated);
      ASSERT_EQ(candidates.Next(sent, generated), id)
          << "trial " << trial << " step " << step << " n " << n;
      generated.push_back(id);
    }
  }
  EXPECT_GT(sparse_steps, 1000);  // the sparse path really ran
}

}  // namespace
}  // namespace iblip::model
