#include "model/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace iblip::model {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

int32_t ArgMax(const std::vector<float>& logits) {
  // First maximum wins, as torch.argmax does.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                              logits.begin());
}

}  // namespace

Sampler::Sampler(SamplingParams params, uint64_t seed)
    : params_(std::move(params)), rng_(seed) {}

void Sampler::ApplyRepetitionPenalty(
    std::vector<float>& logits, const std::vector<int32_t>& generated) const {
  if (params_.repetition_penalty == 1.0f) return;
  std::unordered_set<int32_t> seen(generated.begin(), generated.end());
  for (int32_t id : seen) {
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
  if (params_.temperature <= 0.0f) return ArgMax(logits);
  return Sample(logits);
}

int32_t Sampler::Sample(std::vector<float>& logits) {
  for (float& logit : logits) logit /= params_.temperature;

  // Candidates sorted by logit, descending; ties keep the lower id first.
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (params_.top_k > 0) {
    // HF keeps every token whose logit ties the k-th largest.
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
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
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

}  // namespace iblip::model
