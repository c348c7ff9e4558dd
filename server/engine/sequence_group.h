#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "model/runtime/beam_search.h"
#include "model/runtime/sampler.h"
#include "server/engine/clock.h"
#include "server/engine/generation_request.h"
#include "server/engine/kv_block_manager.h"
#include "server/engine/model_runner.h"
#include "server/metrics.h"

namespace iblip::server {

// A request's generation state inside the engine: its sequences
// (independent samples, or the beams of a beam search), their KV block
// tables and lengths, what is left of its prefill, and what it has emitted.
// Bookkeeping only: the engine runs the model and feeds the logits in; the
// scheduler decides when each piece runs. Engine thread only.
class SequenceGroup {
 public:
  enum class Phase {
    kVision,   // waiting for (or in) the vision stage
    kPrefill,  // encoded; prefill pending or in progress
    kRunning,  // decoding
    kFinished,
  };

  // One piece of prefill work: positions [start, end) of `sequence`.
  struct PrefillItem {
    int sequence = 0;
    int start = 0;
    int end = 0;
  };

  // `eos_token_ids`, `metrics` and `clock` must outlive the group.
  SequenceGroup(uint64_t id, std::shared_ptr<GenerationRequest> request,
                const std::vector<int32_t>& eos_token_ids, bool encoder_decoder,
                int32_t decoder_start_token, Metrics& metrics,
                const Clock& clock);

  uint64_t id() const { return id_; }
  GenerationRequest& request() { return *request_; }
  const GenerationRequest& request() const { return *request_; }
  Priority priority() const { return request_->priority; }
  absl::Time arrival() const { return request_->arrival; }
  bool internal() const { return request_->internal; }
  Phase phase() const { return phase_; }
  void set_phase(Phase phase) { phase_ = phase; }
  bool beam_search() const { return beam_.has_value(); }
  int num_sequences() const { return static_cast<int>(sequences_.size()); }
  int live_sequences() const;
  int preemptions() const { return usage_.preemptions; }

  // --- prefill --------------------------------------------------------------
  // Positions of the model input before any generated token (LLaMA: soft
  // prompt + prompt; T5: the decoder's start token).
  int prompt_positions() const;
  // Encoder positions (T5: soft prompt + prompt; 0 otherwise).
  int encoder_positions() const;
  // The image embedding arrived: plans the prefill of sequence 0.
  void BeginPrefill();
  // The next prefill item, or nullopt when prefill is complete.
  std::optional<PrefillItem> NextPrefillItem() const;
  // The item that was planned ran: `end` positions of its sequence are now
  // in the cache. Sequences that share the prompt get their tables when the
  // prompt is complete.
  void PrefillDone(const PrefillItem& item, int end, KvBlockManager& blocks);
  // True once the next item starts where the cache still lacks nothing,
  // i.e. prefill finished and the group can decode.
  bool prefill_complete() const { return !NextPrefillItem().has_value(); }
  // After the last prefill item of a fresh start: sample the first token(s)
  // from its logits. (A group recomputed after preemption resumes without.)
  void Start(std::vector<float> first_logits, KvBlockManager& blocks);
  bool needs_first_token() const { return !started_; }

  // The input a prefill chunk of `sequence` reads: prompt ids, then (after
  // preemption) its generated tokens but the last (which the next decode
  // step feeds).
  const std::vector<int32_t>& prefill_tokens(int sequence);
  // T5: the decoder tokens after the start token to recompute.
  const std::vector<int32_t>& decoder_tokens(int sequence);

  BlockTable& table(int sequence) { return sequences_[sequence].table; }
  BlockTable& cross_table() { return cross_table_; }

  // --- decode -----------------------------------------------------------------
  // Live sequences' indices (the rows this group decodes).
  std::vector<int> LiveSequences() const;
  // The row sequence `s` decodes next: its pending token at its next position.
  DecodeRow Row(int sequence) const;
  int kv_length(int sequence) const { return sequences_[sequence].kv_length; }
  // The logits of the rows Row() gave for LiveSequences(), in that order.
  // Releases finished sequences' blocks; beam reordering shares tables.
  void Consume(std::vector<std::vector<float>> logits, KvBlockManager& blocks);

  // --- ending -----------------------------------------------------------------
  // Sequences the request side stopped (stop sequences): finished now.
  void ApplyStopSequenceHits(KvBlockManager& blocks);
  // Evicted for lack of KV blocks: every table released, prefill replanned
  // to recompute what the live sequences had.
  void Preempt(KvBlockManager& blocks);
  bool finished() const;
  // Ends every live sequence with `reason` (cancel, error), counting it.
  void EndUnfinished(FinishReason reason);
  void ReleaseAll(KvBlockManager& blocks);
  const UsageStats& usage() const { return usage_; }
  UsageStats& mutable_usage() { return usage_; }
  // The engine took it from its queue (the end of its queue time).
  bool taken() const { return taken_; }
  void set_taken() { taken_ = true; }
  // Model time spent on its prefill chunks.
  absl::Duration prefill_time() const { return prefill_time_; }
  void add_prefill_time(absl::Duration d) { prefill_time_ += d; }

 private:
  struct Sequence {
    BlockTable table;
    int kv_length = 0;  // positions whose keys/values are in the cache
    std::vector<int32_t> generated;
    int32_t next_input = -1;  // the last generated token, fed next
    std::unique_ptr<model::Sampler> sampler;
    std::vector<int32_t> prefill_tokens;  // see prefill_tokens()
    bool finished = false;
    absl::Time last_token_time = absl::InfinitePast();  // none yet
  };

  // Samples one token of sequence `s` from `logits` and emits it.
  void SampleAndEmit(int s, std::vector<float> logits);
  // Reorders the beams after a beam step; emits the hypotheses when done.
  void ApplyBeamStep(const model::BeamSearch::Step& step,
                     KvBlockManager& blocks);
  void FinishBeams(KvBlockManager& blocks);
  void FinishSequence(int s, FinishReason reason, KvBlockManager* blocks);
  // Time-to-first-token and inter-token latency of sequence `s`.
  void RecordToken(int s);
  const std::vector<int32_t>& GeneratedTokens(int s) const;

  const uint64_t id_;
  std::shared_ptr<GenerationRequest> request_;
  const std::vector<int32_t>& eos_token_ids_;
  const bool encoder_decoder_;
  const int32_t decoder_start_token_;
  Metrics& metrics_;
  const Clock& clock_;

  Phase phase_ = Phase::kVision;
  std::vector<Sequence> sequences_;
  std::optional<model::BeamSearch> beam_;
  BlockTable cross_table_;  // T5: the encoder's cross keys/values
  std::vector<PrefillItem> prefill_;  // planned, in order
  size_t prefill_next_ = 0;           // first item not finished
  int prefill_done_to_ = 0;  // positions of prefill_[prefill_next_] done
  bool started_ = false;     // first token sampled
  bool first_token_recorded_ = false;
  absl::Time beam_step_time_;  // beam search: the last step's time
  absl::Duration prefill_time_;
  bool taken_ = false;
  UsageStats usage_;
};

}  // namespace iblip::server
