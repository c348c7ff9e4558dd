#include "model/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include "model/runtime/top_candidates.h"

namespace iblip::model {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
// Top-p without top-k ranks this many ids first, then 4x as many each time
// their mass falls short of top_p.
constexpr size_t kFirstCandidates = 64;
constexpr size_t kCandidateGrowth = 4;

int32_t ArgMax(const std::vector<float>& logits) {
  // First maximum wins, as torch.argmax does.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                              logits.begin());
}

// Unnormalized probability of a logit, in double as before normalizing.
double Weight(float logit, float max_logit) {
  return std::exp(static_cast<double>(logit) - max_logit);
}

// Ranks the best `count` ids, best first (those ranked before stay in
// front, so their weights stay valid), and weighs the new ones.
void RankBest(const std::vector<float>& logits, size_t count, float max_logit,
              std::vector<int64_t>& ranked, std::vector<double>& weights) {
  ranked = TopCandidates(logits, count);
  for (size_t i = weights.size(); i < ranked.size(); ++i)
    weights.push_back(Weight(logits[ranked[i]], max_logit));
}

// How many of the best-first `weights` it takes for their share of `total`
// to reach top_p (Hugging Face keeps at least one); nullopt when all of them
// fall short.
std::optional<size_t> NucleusSize(const std::vector<double>& weights,
                                  double total, float top_p) {
  double cumulative = 0;
  for (size_t n = 0; n < weights.size(); ++n) {
    cumulative += weights[n] / total;
    if (cumulative >= top_p) return n + 1;
  }
  return std::nullopt;
}

// The top_k best ids, then every other id tied with the k-th (Hugging Face
// keeps all logits >= the k-th largest), best first.
std::vector<int64_t> TopKWithTies(const std::vector<float>& logits,
                                  size_t top_k) {
  std::vector<int64_t> kept = TopCandidates(logits, top_k);
  const int64_t kth = kept.back();
  // Ids tied with the k-th rank after it: those after it in id order.
  for (size_t i = kth + 1; i < logits.size(); ++i) {
    if (logits[i] == logits[kth]) kept.push_back(static_cast<int64_t>(i));
  }
  return kept;
}

}  // namespace

Sampler::Sampler(SamplingParams params, uint64_t seed)
    : params_(std::move(params)), rng_(seed) {}

void Sampler::ApplyRepetitionPenalty(std::vector<float>& logits,
                                     const std::vector<int32_t>& generated) {
  if (params_.repetition_penalty == 1.0f) return;
  if (generated.size() < absorbed_ ||
      (absorbed_ > 0 && generated[absorbed_ - 1] != last_absorbed_)) {
    seen_.clear();
    seen_in_order_.clear();
    absorbed_ = 0;
  }
  for (size_t i = absorbed_; i < generated.size(); ++i) {
    if (seen_.insert(generated[i]).second)
      seen_in_order_.push_back(generated[i]);
  }
  absorbed_ = generated.size();
  if (absorbed_ > 0) last_absorbed_ = generated.back();
  for (int32_t id : seen_in_order_) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float& logit = logits[id];
    logit = logit < 0 ? logit * params_.repetition_penalty
                      : logit / params_.repetition_penalty;
  }
}

int32_t Sampler::Next(std::vector<float>& logits,
                      const std::vector<int32_t>& generated) {
  ApplyRepetitionPenalty(logits, generated);
  if (static_cast<int>(generated.size()) < params_.min_new_tokens) {
    for (int32_t eos : params_.eos_token_ids) {
      if (eos >= 0 && static_cast<size_t>(eos) < logits.size())
        logits[eos] = kMinusInf;
    }
  }
  if (params_.temperature <= 0.0f || logits.empty()) return ArgMax(logits);
  return Sample(logits);
}

int Sampler::CandidatesNeeded(size_t generated_count) const {
  if (params_.repetition_penalty != 1.0f) return 0;
  const int masked = static_cast<int>(generated_count) < params_.min_new_tokens
                         ? static_cast<int>(params_.eos_token_ids.size())
                         : 0;
  if (params_.temperature <= 0.0f) return 1 + masked;
  if (params_.top_k <= 0) return 0;
  return params_.top_k + masked;
}

int32_t Sampler::Sample(std::vector<float>& logits) {
  for (float& logit : logits) logit /= params_.temperature;
  const size_t vocab = logits.size();
  const bool top_p = params_.top_p < 1.0f;
  const bool keeps_all =
      params_.top_k <= 0 || static_cast<size_t>(params_.top_k) >= vocab;

  // The ids kept, best first; without top-k only as many as top-p or the
  // draw reach (more are ranked when they fall short).
  std::vector<int64_t> ranked = keeps_all
                                    ? TopCandidates(logits, kFirstCandidates)
                                    : TopKWithTies(logits, params_.top_k);
  const float max_logit = logits[ranked[0]];
  std::vector<double> weights;  // of ranked
  for (int64_t id : ranked) weights.push_back(Weight(logits[id], max_logit));
  double total = 0;  // of every id kept
  if (keeps_all) {
    for (float logit : logits) total += Weight(logit, max_logit);
  } else {
    for (double w : weights) total += w;
  }

  if (keeps_all && !top_p) {
    if (!(total > 0)) return static_cast<int32_t>(ranked[0]);
    std::uniform_real_distribution<double> uniform(0.0, total);
    double coin = uniform(rng_);
    for (size_t i = 0;; ++i) {
      if (i == ranked.size()) {
        if (i == vocab) return static_cast<int32_t>(ranked.back());
        RankBest(logits, i * kCandidateGrowth, max_logit, ranked, weights);
      }
      coin -= weights[i];
      if (coin <= 0) return static_cast<int32_t>(ranked[i]);
    }
  }
  if (top_p) {
    std::optional<size_t> nucleus;
    while (!(nucleus = NucleusSize(weights, total, params_.top_p)) &&
           ranked.size() < vocab && keeps_all) {
      RankBest(logits, ranked.size() * kCandidateGrowth, max_logit, ranked,
               weights);
    }
    ranked.resize(nucleus.value_or(ranked.size()));
    weights.resize(ranked.size());
    total = std::accumulate(weights.begin(), weights.end(), 0.0);
  }
  if (!(total > 0)) return static_cast<int32_t>(ranked[0]);
  std::uniform_real_distribution<double> uniform(0.0, total);
  double coin = uniform(rng_);
  for (size_t i = 0; i < ranked.size(); ++i) {
    coin -= weights[i];
    if (coin <= 0) return static_cast<int32_t>(ranked[i]);
  }
  return static_cast<int32_t>(ranked.back());
}

}  // namespace iblip::model
