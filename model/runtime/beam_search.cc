#include "model/runtime/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "model/runtime/top_candidates.h"

namespace iblip::model {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// log_softmax in float32, as torch computes it for float32 logits, written
// into `out` (no row copy per beam).
void LogSoftmaxInto(const std::vector<float>& logits, float* out) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - max));
  const float log_sum = static_cast<float>(std::log(sum));
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - max - log_sum;
}

}  // namespace

BeamSearch::BeamSearch(BeamSearchParams params) : params_(std::move(params)) {
  beams_.assign(params_.num_beams, {});
  // Only the first beam expands at the first step (the others are copies).
  beam_scores_.assign(params_.num_beams, -1e9f);
  beam_scores_[0] = 0;
}

bool BeamSearch::IsDone(float best_sum_logprobs, int length) const {
  if (static_cast<int>(hypotheses_.size()) < params_.num_beams) return false;
  if (params_.early_stopping) return true;
  const float highest_attainable =
      best_sum_logprobs /
      std::pow(static_cast<float>(length), params_.length_penalty);
  return worst_score_ >= highest_attainable;
}

void BeamSearch::AddHypothesis(std::vector<int32_t> tokens, float sum_logprobs,
                               int length, bool eos) {
  const float score = sum_logprobs / std::pow(static_cast<float>(length),
                                              params_.length_penalty);
  if (static_cast<int>(hypotheses_.size()) < params_.num_beams ||
      score > worst_score_) {
    hypotheses_.push_back({std::move(tokens), score, eos});
    if (static_cast<int>(hypotheses_.size()) > params_.num_beams) {
      auto worst = std::min_element(
          hypotheses_.begin(), hypotheses_.end(),
          [](const auto& a, const auto& b) { return a.score < b.score; });
      hypotheses_.erase(worst);
      worst_score_ = std::min_element(hypotheses_.begin(), hypotheses_.end(),
                                      [](const auto& a, const auto& b) {
                                        return a.score < b.score;
                                      })
                         ->score;
    } else {
      worst_score_ = std::min(score, worst_score_);
    }
  }
}

BeamSearch::Step BeamSearch::Advance(
    const std::vector<std::vector<float>>& logits) {
  const int k = params_.num_beams;
  const size_t vocab = logits[0].size();
  const std::unordered_set<int32_t> eos(params_.eos_token_ids.begin(),
                                        params_.eos_token_ids.end());

  // Scores of every (beam, token) continuation.
  scores_.resize(k * vocab);
  if (seen_.size() < vocab) seen_.resize(vocab, false);
  for (int b = 0; b < k; ++b) {
    float* row = scores_.data() + b * vocab;
    LogSoftmaxInto(logits[b], row);
    if (params_.repetition_penalty != 1.0f) {
      // Each distinct id once; seen_ is all false again afterwards.
      for (int32_t id : beams_[b]) {
        if (seen_[id]) continue;
        seen_[id] = true;
        float& s = row[id];
        s = s < 0 ? s * params_.repetition_penalty
                  : s / params_.repetition_penalty;
      }
      for (int32_t id : beams_[b]) seen_[id] = false;
    }
    if (generated_ < params_.min_new_tokens) {
      for (int32_t id : params_.eos_token_ids) row[id] = kMinusInf;
    }
    for (size_t v = 0; v < vocab; ++v) row[v] += beam_scores_[b];
  }
  const std::vector<float>& scores = scores_;
  const size_t candidates =
      std::min(scores.size(),
               static_cast<size_t>(std::max<size_t>(2, 1 + eos.size()) * k));
  // The best candidates, best first (ties: the lower beam, then the lower
  // id), without sorting beams x vocabulary.
  const std::vector<int64_t> order = TopCandidates(scores, candidates);

  Step step;
  std::vector<float> next_scores;
  for (size_t rank = 0;
       rank < candidates && static_cast<int>(step.tokens.size()) < k; ++rank) {
    const int parent = static_cast<int>(order[rank] / vocab);
    const auto token = static_cast<int32_t>(order[rank] % vocab);
    if (eos.count(token) != 0) {
      if (static_cast<int>(rank) >= k)
        continue;  // only EOS among the top k finishes a beam
      std::vector<int32_t> tokens = beams_[parent];
      tokens.push_back(token);
      // Its length counts the EOS (transformers 4.40: cur_len + 1 minus the
      // decoder prompt).
      AddHypothesis(std::move(tokens), scores[order[rank]], generated_ + 1,
                    /*eos=*/true);
    } else {
      step.parents.push_back(parent);
      step.tokens.push_back(token);
      next_scores.push_back(scores[order[rank]]);
    }
  }
  done_ = done_ || IsDone(scores[order[0]], generated_ + 1);

  // A parent's last child takes its tokens over; the others copy them.
  std::vector<size_t> last_child(beams_.size());
  for (size_t i = 0; i < step.parents.size(); ++i)
    last_child[step.parents[i]] = i;
  std::vector<std::vector<int32_t>> next(step.tokens.size());
  for (size_t i = 0; i < step.tokens.size(); ++i) {
    std::vector<int32_t>& parent = beams_[step.parents[i]];
    next[i] = last_child[step.parents[i]] == i ? std::move(parent) : parent;
    next[i].push_back(step.tokens[i]);
  }
  beams_ = std::move(next);
  beam_scores_ = std::move(next_scores);
  ++generated_;
  if (generated_ >= params_.max_new_tokens) {
    if (!done_) {
      for (size_t b = 0; b < beams_.size(); ++b) {
        AddHypothesis(beams_[b], beam_scores_[b], generated_, /*eos=*/false);
      }
    }
    done_ = true;
  }
  return step;
}

std::vector<BeamSearch::Hypothesis> BeamSearch::Finalize() {
  // Hugging Face sorts ascending (stable) and pops from the end: among equal
  // scores the hypothesis added last comes first.
  std::vector<Hypothesis> sorted = hypotheses_;
  std::stable_sort(
      sorted.begin(), sorted.end(),
      [](const auto& a, const auto& b) { return a.score < b.score; });
  std::reverse(sorted.begin(), sorted.end());
  sorted.resize(std::min<size_t>(sorted.size(), params_.num_return_sequences));
  return sorted;
}

}  // namespace iblip::model
