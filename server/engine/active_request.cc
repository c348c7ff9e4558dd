#include "server/engine/active_request.h"

#include <algorithm>

namespace iblip::server {

ActiveRequest::ActiveRequest(std::shared_ptr<GenerationRequest> request,
                             const model::LmTokenizer& tokenizer,
                             const std::vector<int32_t>& eos_token_ids,
                             Metrics& metrics)
    : request_(std::move(request)),
      tokenizer_(tokenizer),
      eos_token_ids_(eos_token_ids),
      metrics_(metrics) {
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
  sequences_.resize(slots_needed());
  for (size_t i = 0; i < sequences_.size(); ++i) {
    model::SamplingParams params = s.sampling;
    params.eos_token_ids = eos_token_ids_;
    // Sequence i uses seed + i: reproducible whatever else runs.
    sequences_[i].sampler =
        std::make_unique<model::Sampler>(params, s.seed + i);
    sequences_[i].streamer =
        std::make_unique<model::TextStreamer>(tokenizer_, s.stop_sequences);
  }
}

int ActiveRequest::slots_needed() const {
  return SlotsNeeded(request_->settings);
}

void ActiveRequest::RecordToken() {
  const absl::Time now = absl::Now();
  if (usage_.generated_tokens == 0) {
    usage_.time_to_first_token = now - request_->arrival;
    metrics_.ObserveTimeToFirstToken(usage_.time_to_first_token);
  } else {
    metrics_.ObserveInterTokenLatency(now - last_token_time_);
  }
  last_token_time_ = now;
}

void ActiveRequest::Start(std::vector<int> slots,
                          const std::vector<float>& first_logits,
                          UsageStats usage) {
  usage_ = std::move(usage);
  for (size_t i = 0; i < sequences_.size(); ++i) sequences_[i].slot = slots[i];
  if (beam_) {
    std::vector<std::pair<int, int>> copies;
    std::vector<std::vector<float>> rows(sequences_.size(), first_logits);
    ApplyBeamStep(beam_->Advance(rows), copies);
    // Every beam starts from the prompt, which every slot already holds.
    RecordToken();
    if (beam_->done()) FinishBeams();
    return;
  }
  for (size_t i = 0; i < sequences_.size(); ++i)
    SampleAndEmit(static_cast<int>(i), first_logits);
}

void ActiveRequest::CollectRows(std::vector<int>& slots,
                                std::vector<int32_t>& tokens) const {
  for (const Sequence& s : sequences_) {
    if (s.finished) continue;
    slots.push_back(s.slot);
    tokens.push_back(s.last_token);
  }
}

std::vector<std::pair<int, int>> ActiveRequest::Consume(
    const std::vector<std::vector<float>>& logits) {
  std::vector<std::pair<int, int>> copies;
  if (beam_) {
    ApplyBeamStep(beam_->Advance(logits), copies);
    RecordToken();
    if (beam_->done()) FinishBeams();
    return copies;
  }
  size_t row = 0;
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (sequences_[i].finished) continue;
    SampleAndEmit(static_cast<int>(i), logits[row++]);
  }
  return copies;
}

void ActiveRequest::SampleAndEmit(int index, std::vector<float> logits) {
  Sequence& s = sequences_[index];
  const int32_t token = s.sampler->Next(logits, s.generated);
  s.generated.push_back(token);
  s.last_token = token;
  RecordToken();
  ++usage_.generated_tokens;
  metrics_.AddGeneratedTokens(1);

  SequenceDelta delta;
  delta.index = index;
  delta.token_ids = {token};
  model::TextStreamer::Delta text = s.streamer->Append(token);
  delta.text = std::move(text.text);
  const bool eos = std::find(eos_token_ids_.begin(), eos_token_ids_.end(),
                             token) != eos_token_ids_.end();
  if (eos) {
    delta.finish_reason = FinishReason::kStop;
  } else if (text.stopped) {
    delta.finish_reason = FinishReason::kStopSequence;
  } else if (static_cast<int>(s.generated.size()) >=
             request_->settings.max_new_tokens) {
    delta.finish_reason = FinishReason::kLength;
  }
  if (delta.finish_reason == FinishReason::kStop ||
      delta.finish_reason == FinishReason::kLength) {
    delta.text += s.streamer->Finish();
  }
  delta.elapsed = absl::Now() - request_->arrival;
  if (delta.finish_reason != FinishReason::kNone) {
    s.finished = true;
    released_.push_back(s.slot);
    metrics_.SequenceFinished(delta.finish_reason);
  }
  request_->sink->OnDelta(std::move(delta));
}

void ActiveRequest::ApplyBeamStep(const model::BeamSearch::Step& step,
                                  std::vector<std::pair<int, int>>& copies) {
  // Beam i continues beam parents[i]: its slot takes the parent's cache.
  std::vector<int> old_slots;
  for (const Sequence& s : sequences_) old_slots.push_back(s.slot);
  for (size_t i = 0; i < step.tokens.size(); ++i) {
    const int parent_slot = old_slots[step.parents[i]];
    if (parent_slot != sequences_[i].slot)
      copies.emplace_back(sequences_[i].slot, parent_slot);
    sequences_[i].last_token = step.tokens[i];
  }
}

void ActiveRequest::FinishBeams() {
  const auto hypotheses = beam_->Finalize();
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto& h = hypotheses[i];
    SequenceDelta delta;
    delta.index = static_cast<int>(i);
    delta.token_ids = h.tokens;
    delta.text = tokenizer_.Decode(h.tokens);
    if (const auto& stops = request_->settings.stop_sequences; !stops.empty()) {
      for (const std::string& stop : stops) {
        if (auto at = delta.text.find(stop); at != std::string::npos) {
          delta.text.resize(at);
          delta.finish_reason = FinishReason::kStopSequence;
        }
      }
    }
    if (delta.finish_reason == FinishReason::kNone) {
      delta.finish_reason =
          h.ended_with_eos ? FinishReason::kStop : FinishReason::kLength;
    }
    usage_.generated_tokens += static_cast<int>(h.tokens.size());
    metrics_.AddGeneratedTokens(static_cast<int>(h.tokens.size()));
    metrics_.SequenceFinished(delta.finish_reason);
    delta.elapsed = absl::Now() - request_->arrival;
    request_->sink->OnDelta(std::move(delta));
  }
  for (Sequence& s : sequences_) {
    s.finished = true;
    released_.push_back(s.slot);
  }
}

std::vector<int> ActiveRequest::TakeReleasedSlots() {
  std::vector<int> out;
  out.swap(released_);
  return out;
}

std::vector<int> ActiveRequest::slots() const {
  std::vector<int> out;
  for (const Sequence& s : sequences_) {
    if (!s.finished && s.slot >= 0) out.push_back(s.slot);
  }
  return out;
}

bool ActiveRequest::finished() const {
  return std::all_of(sequences_.begin(), sequences_.end(),
                     [](const Sequence& s) { return s.finished; });
}

}  // namespace iblip::server
