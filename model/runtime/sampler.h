#pragma once

#include <cstdint>
#include <random>
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
// then for sampling temperature, top-k, top-p. Owns the sequence's random
// generator, so a seed reproduces a sequence whatever else runs.
// Not thread-safe; one sequence, one engine thread.
class Sampler {
 public:
  Sampler(SamplingParams params, uint64_t seed);

  // `logits` (one per vocabulary id) is modified in place. `generated` holds
  // the sequence's tokens so far (the repetition penalty sees only these, as
  // InstructBLIP's inputs_embeds-based generate does).
  int32_t Next(std::vector<float>& logits,
               const std::vector<int32_t>& generated);

 private:
  void ApplyRepetitionPenalty(std::vector<float>& logits,
                              const std::vector<int32_t>& generated) const;
  int32_t Sample(std::vector<float>& logits);

  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace iblip::model
