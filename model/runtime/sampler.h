#pragma once

#include <cstdint>
#include <random>
#include <unordered_set>
#include <vector>

namespace iblip::model {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 50;            // 0 = off; sampling only
  float top_p = 1.0f;        // 1 = off; sampling only
  float repetition_penalty = 1.0f;
  int min_new_tokens = 0;  // EOS masked until this many tokens exist
  std::vector<int32_t> eos_token_ids;
};

// Chooses the next token of one sequence from its logits, with Hugging Face's
// logits-processor order: repetition penalty, min_new_tokens (EOS masked),
// then for sampling temperature, top-k (every id tied with the k-th kept),
// top-p (the smallest best-first set whose probability reaches top_p, at
// least one id), and a draw from what is left. Owns the sequence's random
// generator, so a seed reproduces a sequence whatever else runs.
//
// COST per token: O(vocab) plus O(k log k) for top-k; nothing sorts the
// vocabulary unless top-p without top-k needs most of it (the candidates
// grow fourfold from 64 until their mass reaches top_p). The repetition
// penalty costs O(distinct ids generated), not O(sequence length).
// Not thread-safe; one sequence, one engine thread.
class Sampler {
 public:
  Sampler(SamplingParams params, uint64_t seed);

  // `logits` (one per vocabulary id) is modified in place. `generated` holds
  // the sequence's tokens so far (the repetition penalty sees only these, as
  // InstructBLIP's inputs_embeds-based generate does); between calls it is
  // expected to grow by appending. The sampler keeps the set of ids seen and
  // adds only the new ones (it starts over when the list got shorter or its
  // last seen id changed).
  int32_t Next(std::vector<float>& logits,
               const std::vector<int32_t>& generated);

  // How many of the next step's best logits Next() can depend on, when
  // `generated_count` tokens exist: n > 0 means that setting every logit
  // outside the n largest to -inf leaves Next()'s choice (and its random
  // draw) unchanged, provided the n-th largest is strictly above the rest
  // (the caller sends the whole row on a tie); 0 means it needs them all.
  //   greedy: 1, plus the EOS ids while min_new_tokens masks them;
  //   top-k sampling: top_k, plus the EOS ids likewise (the weights are
  //     normalized over the ids kept, so nothing else counts);
  //   a repetition penalty (it can lift or sink any seen id past the
  //     others), top-p or plain sampling without top-k (normalized over the
  //     whole vocabulary): 0.
  // A GPU runner uses it to copy a few values per row instead of the
  // vocabulary (InstructBlipModel::Decode).
  int CandidatesNeeded(size_t generated_count) const;

 private:
  void ApplyRepetitionPenalty(std::vector<float>& logits,
                              const std::vector<int32_t>& generated);
  int32_t Sample(std::vector<float>& logits);

  SamplingParams params_;
  std::mt19937_64 rng_;

  // Distinct ids of generated[0:absorbed_), for the repetition penalty.
  std::unordered_set<int32_t> seen_;
  std::vector<int32_t> seen_in_order_;
  size_t absorbed_ = 0;
  int32_t last_absorbed_ = 0;  // generated[absorbed_ - 1]
};

}  // namespace iblip::model
