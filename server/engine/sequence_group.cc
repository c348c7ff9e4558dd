#include "server/engine/sequence_group.h"

#include <algorithm>

namespace iblip::server {

SequenceGroup::SequenceGroup(uint64_t id,
                             std::shared_ptr<GenerationRequest> request,
                             const std::vector<int32_t>& eos_token_ids,
                             bool encoder_decoder, int32_t decoder_start_token,
                             Metrics& metrics, const Clock& clock)
    : id_(id),
      request_(std::move(request)),
      eos_token_ids_(eos_token_ids),
      encoder_decoder_(encoder_decoder),
      decoder_start_token_(decoder_start_token),
      metrics_(metrics),
      clock_(clock) {
  const GenerationSettings& s = request_->settings;
  if (s.num_beams > 1) {
    model::BeamSearchParams params;
    params.num_beams = s.num_beams;
    params.length_penalty = s.length_penalty;
    params.early_stopping = s.early_stopping;
    params.repetition_penalty = s.sampling.repetition_penalty;
    params.min_new_tokens = s.sampling.min_new_tokens;
    params.max_new_tokens = s.max_new_tokens;
    params.num_return_sequences = s.num_return_sequences;
    params.eos_token_ids = eos_token_ids_;
    beam_.emplace(params);
  }
  sequences_.resize(SequencesNeeded(s));
  for (size_t i = 0; i < sequences_.size(); ++i) {
    model::SamplingParams params = s.sampling;
    params.eos_token_ids = eos_token_ids_;
    // Sequence i uses seed + i: reproducible whatever else runs.
    sequences_[i].sampler =
        std::make_unique<model::Sampler>(params, s.seed + i);
  }
  usage_.seed = s.seed;
  usage_.prompt_tokens = static_cast<int>(request_->prompt_ids.size());
  phase_ = request_->image.empty() ? Phase::kVision : Phase::kPrefill;
}

int SequenceGroup::live_sequences() const {
  return static_cast<int>(
      std::count_if(sequences_.begin(), sequences_.end(),
                    [](const Sequence& s) { return !s.finished; }));
}

int SequenceGroup::prompt_positions() const {
  if (encoder_decoder_) return 1;  // the decoder's start token
  return request_->image.num_positions() +
         static_cast<int>(request_->prompt_ids.size());
}

int SequenceGroup::encoder_positions() const {
  return encoder_decoder_ ? request_->image.num_positions() +
                                static_cast<int>(request_->prompt_ids.size())
                          : 0;
}

void SequenceGroup::BeginPrefill() {
  phase_ = Phase::kPrefill;
  prefill_.clear();
  prefill_next_ = 0;
  usage_.image_tokens = request_->image.num_positions();
  const int prompt = prompt_positions();
  int first = -1;
  for (int s = 0; s < num_sequences(); ++s) {
    Sequence& seq = sequences_[s];
    if (seq.finished) continue;
    // The tokens the cache must hold before the next decode step feeds the
    // pending one: all generated but the last (none on a fresh start).
    const std::vector<int32_t>& generated = GeneratedTokens(s);
    const int recompute =
        generated.empty() ? 0 : static_cast<int>(generated.size()) - 1;
    seq.prefill_tokens = request_->prompt_ids;
    if (!encoder_decoder_) {
      seq.prefill_tokens.insert(seq.prefill_tokens.end(), generated.begin(),
                                generated.begin() + recompute);
    } else {
      seq.prefill_tokens.assign(generated.begin(),
                                generated.begin() + recompute);
    }
    if (first < 0) {
      first = s;
      prefill_.push_back({s, 0, prompt});
    }
    if (recompute > 0) prefill_.push_back({s, prompt, prompt + recompute});
  }
  prefill_done_to_ = prefill_.empty() ? 0 : prefill_.front().start;
}

std::optional<SequenceGroup::PrefillItem> SequenceGroup::NextPrefillItem()
    const {
  if (prefill_next_ >= prefill_.size()) return std::nullopt;
  PrefillItem item = prefill_[prefill_next_];
  item.start = std::max(item.start, prefill_done_to_);
  return item;
}

const std::vector<int32_t>& SequenceGroup::prefill_tokens(int sequence) {
  // Sequences that share the prompt read its tokens from the first one.
  const Sequence& seq = sequences_[sequence];
  return encoder_decoder_ ? request_->prompt_ids : seq.prefill_tokens;
}

const std::vector<int32_t>& SequenceGroup::decoder_tokens(int sequence) {
  return sequences_[sequence].prefill_tokens;
}

void SequenceGroup::PrefillDone(const PrefillItem& item, int end,
                                KvBlockManager& blocks) {
  Sequence& seq = sequences_[item.sequence];
  seq.kv_length = end;
  prefill_done_to_ = end;
  if (end < prefill_[prefill_next_].end) return;
  const bool prompt_item = prefill_next_ == 0;
  ++prefill_next_;
  prefill_done_to_ =
      prefill_next_ < prefill_.size() ? prefill_[prefill_next_].start : 0;
  // Resuming after preemption: the other live sequences continue the
  // recomputed prompt (a fresh start shares it in Start()).
  if (prompt_item && started_) {
    for (int s = 0; s < num_sequences(); ++s) {
      if (s == item.sequence || sequences_[s].finished) continue;
      sequences_[s].table = blocks.Share(seq.table);
      sequences_[s].kv_length = end;
    }
  }
}

void SequenceGroup::Start(std::vector<float> first_logits,
                          KvBlockManager& blocks) {
  started_ = true;
  phase_ = Phase::kRunning;
  Sequence& first = sequences_[0];
  for (int s = 1; s < num_sequences(); ++s) {
    sequences_[s].table = blocks.Share(first.table);
    sequences_[s].kv_length = first.kv_length;
  }
  if (beam_) {
    std::vector<std::vector<float>> rows(sequences_.size(), first_logits);
    ApplyBeamStep(beam_->Advance(rows), blocks);
    return;
  }
  for (int s = 0; s < num_sequences(); ++s) {
    SampleAndEmit(s, s + 1 < num_sequences() ? first_logits
                                             : std::move(first_logits));
    if (sequences_[s].finished) blocks.Release(sequences_[s].table);
  }
}

std::vector<int> SequenceGroup::LiveSequences() const {
  std::vector<int> live;
  for (int s = 0; s < num_sequences(); ++s) {
    if (!sequences_[s].finished) live.push_back(s);
  }
  return live;
}

DecodeRow SequenceGroup::Row(int sequence) const {
  const Sequence& seq = sequences_[sequence];
  DecodeRow row;
  row.token = seq.next_input;
  row.position = seq.kv_length;
  row.table = &seq.table;
  if (encoder_decoder_) {
    row.cross_table = &cross_table_;
    row.cross_length = encoder_positions();
  }
  // Beam search ranks log-softmax over the whole vocabulary: all logits.
  if (!beam_ && seq.sampler)
    row.candidates = seq.sampler->CandidatesNeeded(seq.generated.size());
  return row;
}

void SequenceGroup::Consume(std::vector<std::vector<float>> logits,
                            KvBlockManager& blocks) {
  const std::vector<int> live = LiveSequences();
  for (int s : live) ++sequences_[s].kv_length;
  if (beam_) {
    ApplyBeamStep(beam_->Advance(logits), blocks);
    return;
  }
  for (size_t i = 0; i < live.size(); ++i) {
    SampleAndEmit(live[i], std::move(logits[i]));
    if (sequences_[live[i]].finished) blocks.Release(sequences_[live[i]].table);
  }
}

const std::vector<int32_t>& SequenceGroup::GeneratedTokens(int s) const {
  return beam_ ? beam_->beam(s) : sequences_[s].generated;
}

void SequenceGroup::RecordToken(int s) {
  const absl::Time now = clock_.Now();
  if (!first_token_recorded_) {
    first_token_recorded_ = true;
    usage_.time_to_first_token = now - request_->arrival;
    metrics_.ObserveTimeToFirstToken(usage_.time_to_first_token);
  } else if (sequences_[s].last_token_time != absl::InfinitePast()) {
    metrics_.ObserveInterTokenLatency(now - sequences_[s].last_token_time);
  }
  sequences_[s].last_token_time = now;
}

void SequenceGroup::SampleAndEmit(int s, std::vector<float> logits) {
  Sequence& seq = sequences_[s];
  const int32_t token = seq.sampler->Next(logits, seq.generated);
  seq.generated.push_back(token);
  seq.next_input = token;
  RecordToken(s);
  ++usage_.generated_tokens;

  TokenDelta delta;
  delta.index = s;
  delta.token_ids = {token};
  if (std::find(eos_token_ids_.begin(), eos_token_ids_.end(), token) !=
      eos_token_ids_.end()) {
    delta.finish_reason = FinishReason::kStop;
  } else if (static_cast<int>(seq.generated.size()) >=
             request_->settings.max_new_tokens) {
    delta.finish_reason = FinishReason::kLength;
  }
  delta.elapsed = clock_.Now() - request_->arrival;
  if (delta.finish_reason != FinishReason::kNone) seq.finished = true;
  request_->sink->OnTokens(std::move(delta));
}

void SequenceGroup::ApplyBeamStep(const model::BeamSearch::Step& step,
                                  KvBlockManager& blocks) {
  // Beam i continues beam parents[i]: it takes a share of the parent's
  // blocks (copied on its next write), and the old tables are dropped.
  std::vector<Sequence> next(sequences_.size());
  for (size_t i = 0; i < step.tokens.size(); ++i) {
    const Sequence& parent = sequences_[step.parents[i]];
    next[i].table = blocks.Share(parent.table);
    next[i].kv_length = parent.kv_length;
    next[i].next_input = step.tokens[i];
    next[i].sampler = std::move(sequences_[i].sampler);
  }
  for (Sequence& old : sequences_) blocks.Release(old.table);
  sequences_ = std::move(next);
  // Timing per step: every beam advanced together.
  const absl::Time now = clock_.Now();
  if (!first_token_recorded_) {
    first_token_recorded_ = true;
    usage_.time_to_first_token = now - request_->arrival;
    metrics_.ObserveTimeToFirstToken(usage_.time_to_first_token);
  } else {
    metrics_.ObserveInterTokenLatency(now - beam_step_time_);
  }
  beam_step_time_ = now;
  if (beam_->done()) FinishBeams(blocks);
}

void SequenceGroup::FinishBeams(KvBlockManager& blocks) {
  const auto hypotheses = beam_->Finalize();
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto& h = hypotheses[i];
    TokenDelta delta;
    delta.index = static_cast<int>(i);
    delta.token_ids = h.tokens;
    delta.finish_reason =
        h.ended_with_eos ? FinishReason::kStop : FinishReason::kLength;
    usage_.generated_tokens += static_cast<int>(h.tokens.size());
    delta.elapsed = clock_.Now() - request_->arrival;
    request_->sink->OnTokens(std::move(delta));
  }
  for (Sequence& seq : sequences_) {
    seq.finished = true;
    blocks.Release(seq.table);
  }
}

void SequenceGroup::FinishSequence(int s, FinishReason reason,
                                   KvBlockManager* blocks) {
  Sequence& seq = sequences_[s];
  if (seq.finished) return;
  seq.finished = true;
  if (blocks != nullptr) blocks->Release(seq.table);
  TokenDelta delta;
  delta.index = s;
  delta.finish_reason = reason;
  delta.elapsed = clock_.Now() - request_->arrival;
  request_->sink->OnTokens(std::move(delta));
}

void SequenceGroup::ApplyStopSequenceHits(KvBlockManager& blocks) {
  const uint64_t hits = request_->stop_sequence_hits.load();
  if (hits == 0 || beam_) return;
  for (int s = 0; s < num_sequences() && s < 64; ++s) {
    if ((hits >> s) & 1) {
      // The request side already ended the sequence's text; this only
      // frees its blocks (the sink ignores output after the stop).
      FinishSequence(s, FinishReason::kStopSequence, &blocks);
    }
  }
}

void SequenceGroup::Preempt(KvBlockManager& blocks) {
  for (Sequence& seq : sequences_) {
    blocks.Release(seq.table);
    seq.kv_length = 0;
  }
  blocks.Release(cross_table_);
  ++usage_.preemptions;
  BeginPrefill();
}

bool SequenceGroup::finished() const {
  return std::all_of(sequences_.begin(), sequences_.end(),
                     [](const Sequence& s) { return s.finished; });
}

void SequenceGroup::EndUnfinished(FinishReason reason) {
  for (int s = 0; s < num_sequences(); ++s) {
    if (!sequences_[s].finished) FinishSequence(s, reason, nullptr);
  }
}

void SequenceGroup::ReleaseAll(KvBlockManager& blocks) {
  for (Sequence& seq : sequences_) blocks.Release(seq.table);
  blocks.Release(cross_table_);
}

}  // namespace iblip::server
