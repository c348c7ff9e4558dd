#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "model/runtime/beam_search.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/sampler.h"
#include "model/runtime/text_streamer.h"
#include "server/engine/generation_request.h"
#include "server/metrics.h"

namespace iblip::server {

// The generation state of one admitted request while the engine runs it:
// its sequences (independent samples, or the beams of a beam search), the KV
// cache slot of each, and what has been streamed. Pure bookkeeping: the
// engine does the model calls and feeds the logits in. Engine thread only.
class ActiveRequest {
 public:
  ActiveRequest(std::shared_ptr<GenerationRequest> request,
                const model::LmTokenizer& tokenizer,
                const std::vector<int32_t>& eos_token_ids, Metrics& metrics);

  GenerationRequest& request() { return *request_; }
  bool beam_search() const { return beam_.has_value(); }
  // KV cache slots it needs: num_return_sequences, or num_beams.
  int slots_needed() const;

  // The request's slots after prefill (slot 0 holds the prompt; the engine
  // copies it to the others) and the first token's logits.
  void Start(std::vector<int> slots, const std::vector<float>& first_logits,
             UsageStats usage);

  // The (slot, token) rows to decode this step, appended.
  void CollectRows(std::vector<int>& slots, std::vector<int32_t>& tokens) const;
  // The logits of the rows CollectRows gave, in order. Returns, for beam
  // search, the slot copies to apply before the next decode ({to, from}).
  std::vector<std::pair<int, int>> Consume(
      const std::vector<std::vector<float>>& logits);

  // Slots no sequence needs any more (finished); the engine releases them.
  std::vector<int> TakeReleasedSlots();
  std::vector<int> slots() const;
  bool finished() const;
  const UsageStats& usage() const { return usage_; }

 private:
  struct Sequence {
    int slot = -1;
    int32_t last_token = -1;
    std::vector<int32_t> generated;
    std::unique_ptr<model::Sampler> sampler;
    std::unique_ptr<model::TextStreamer> streamer;
    bool finished = false;
  };
  // Samples and emits one token of sequence `index` from `logits`.
  void SampleAndEmit(int index, std::vector<float> logits);
  void ApplyBeamStep(const model::BeamSearch::Step& step,
                     std::vector<std::pair<int, int>>& copies);
  void FinishBeams();
  void RecordToken();

  std::shared_ptr<GenerationRequest> request_;
  const model::LmTokenizer& tokenizer_;
  const std::vector<int32_t> eos_token_ids_;
  Metrics& metrics_;
  std::vector<Sequence> sequences_;
  std::optional<model::BeamSearch> beam_;
  std::vector<int> released_;
  UsageStats usage_;
  absl::Time last_token_time_;
};

}  // namespace iblip::server
