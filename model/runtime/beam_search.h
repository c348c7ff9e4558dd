#pragma once

#include <cstdint>
#include <vector>

namespace iblip::model {

struct BeamSearchParams {
  int num_beams = 5;
  float length_penalty = 1.0f;  // scores are divided by length^length_penalty
  bool early_stopping = false;  // false: Hugging Face's heuristic
  float repetition_penalty =
      1.0f;  // on log-probabilities, as HF applies it in beam search
  int min_new_tokens = 0;
  int max_new_tokens = 20;
  int num_return_sequences = 1;
  std::vector<int32_t> eos_token_ids;
};

// Beam search with the semantics of Hugging Face's BeamSearchScorer
// (transformers 4.40): log_softmax, logits processors, + beam score, top
// 2k (more with several EOS ids) over beams x vocabulary, EOS candidates
// among the top k become finished hypotheses scored
// sum_logprobs / generated_length^length_penalty (the length counts the EOS),
// and the search ends when no live beam can beat the worst kept hypothesis
// (early_stopping false: the best candidate score over the length including
// the next token) or at max_new_tokens. Pure computation: the engine feeds it
// logits and applies its parent choices to the KV caches. Not thread-safe.
class BeamSearch {
 public:
  explicit BeamSearch(BeamSearchParams params);

  struct Step {
    std::vector<int> parents;     // per new beam: the beam it continues
    std::vector<int32_t> tokens;  // per new beam: its new token
  };

  // `logits`: one row per live beam (num_beams rows; at the first step all
  // rows may be the same prompt's logits). Returns the beams to continue;
  // check done() afterwards.
  Step Advance(const std::vector<std::vector<float>>& logits);

  bool done() const { return done_; }
  // Live beam `i`'s generated tokens (what it would recompute).
  const std::vector<int32_t>& beam(int i) const { return beams_[i]; }
  int generated() const { return generated_; }

  struct Hypothesis {
    std::vector<int32_t>
        tokens;       // generated ids, the EOS included when it ended
    float score = 0;  // HF's sequences_scores
    bool ended_with_eos = false;
  };
  // The best num_return_sequences hypotheses, best first. Call once done().
  std::vector<Hypothesis> Finalize();

 private:
  void AddHypothesis(std::vector<int32_t> tokens, float sum_logprobs,
                     int length, bool eos);
  bool IsDone(float best_sum_logprobs, int length) const;

  BeamSearchParams params_;
  std::vector<std::vector<int32_t>> beams_;  // live beams' generated tokens
  std::vector<float> beam_scores_;
  std::vector<Hypothesis> hypotheses_;  // at most num_beams kept
  float worst_score_ = 1e9f;
  // Scratch reused by every step: beams x vocabulary scores, and the ids of
  // one beam's repetition penalty (all false between uses).
  std::vector<float> scores_;
  std::vector<bool> seen_;
  int generated_ = 0;
  bool done_ = false;
};

}  // namespace iblip::model
