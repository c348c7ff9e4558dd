#include "server/pipeline/output_processor.h"

namespace iblip::server {

std::shared_ptr<OutputProcessor> OutputProcessor::Create(
    std::weak_ptr<GenerationRequest> request, const GenerationSettings& settings,
    const model::LmTokenizer& tokenizer, std::shared_ptr<ResponseSink> target,
    WorkerPool& pool, Metrics& metrics) {
  return std::shared_ptr<OutputProcessor>(new OutputProcessor(
      std::move(request), settings, tokenizer, std::move(target), pool,
      metrics));
}

OutputProcessor::OutputProcessor(std::weak_ptr<GenerationRequest> request,
                                 const GenerationSettings& settings,
                                 const model::LmTokenizer& tokenizer,
                                 std::shared_ptr<ResponseSink> target,
                                 WorkerPool& pool, Metrics& metrics)
    : request_(std::move(request)),
      beam_search_(settings.num_beams > 1),
      max_new_tokens_(settings.max_new_tokens),
      tokenizer_(tokenizer),
      stop_sequences_(settings.stop_sequences),
      target_(std::move(target)),
      pool_(pool),
      metrics_(metrics) {
  // Beam search returns num_return_sequences hypotheses; sampling one
  // sequence per returned sequence.
  sequences_.resize(settings.num_return_sequences);
  for (Sequence& sequence : sequences_) {
    sequence.streamer =
        std::make_unique<model::TextStreamer>(tokenizer_, stop_sequences_);
  }
}

void OutputProcessor::OnTokens(TokenDelta delta) {
  Event event;
  event.tokens = std::move(delta);
  Enqueue(std::move(event));
}

void OutputProcessor::OnComplete(const absl::Status& status,
                                 const UsageStats& usage) {
  Event event;
  event.completion = Completion{status, usage};
  Enqueue(std::move(event));
}

void OutputProcessor::Enqueue(Event event) {
  {
    MutexLock lock(&mutex_);
    events_.push_back(std::move(event));
    if (draining_) return;
    draining_ = true;
  }
  pool_.Post([self = shared_from_this()] { self->Drain(); });
}

void OutputProcessor::Drain() {
  for (;;) {
    Event event;
    {
      MutexLock lock(&mutex_);
      if (events_.empty()) {
        draining_ = false;
        return;
      }
      event = std::move(events_.front());
      events_.pop_front();
    }
    if (event.tokens) Process(std::move(*event.tokens));
    if (event.completion) Complete(std::move(*event.completion));
  }
}

void OutputProcessor::Process(TokenDelta delta) {
  if (delta.index < 0 ||
      delta.index >= static_cast<int>(sequences_.size())) {
    return;  // a beam the search did not return
  }
  Sequence& sequence = sequences_[delta.index];
  if (sequence.finished) return;  // after a stop sequence
  SequenceDelta out;
  out.index = delta.index;
  out.elapsed = delta.elapsed;
  out.finish_reason = delta.finish_reason;
  for (int32_t id : delta.token_ids) {
    out.token_ids.push_back(id);
    ++sequence.accepted_tokens;
    model::TextStreamer::Delta text = sequence.streamer->Append(id);
    out.text += text.text;
    if (text.stopped) {
      out.finish_reason = FinishReason::kStopSequence;
      // Beam hypotheses keep their ids (as Hugging Face); a sampled
      // sequence stops generating.
      if (!beam_search_) {
        if (auto request = request_.lock(); request && delta.index < 64) {
          request->stop_sequence_hits.fetch_or(uint64_t{1} << delta.index);
        }
        break;
      }
    }
  }
  // Counted here, not where the engine samples: tokens past a stop
  // sequence (generated before the engine heard of it) are not the
  // client's, and the counters agree with the usage it is told.
  metrics_.AddGeneratedTokens(static_cast<int>(out.token_ids.size()));
  if (out.finish_reason == FinishReason::kStop ||
      out.finish_reason == FinishReason::kLength) {
    out.text += sequence.streamer->Finish();
  }
  if (out.finish_reason != FinishReason::kNone) {
    sequence.finished = true;
    metrics_.SequenceFinished(out.finish_reason);
    // A cancelled or failed request ends with its status, not deltas.
    if (out.finish_reason == FinishReason::kCancelled ||
        out.finish_reason == FinishReason::kError) {
      return;
    }
  }
  target_->OnDelta(std::move(out));
}

void OutputProcessor::Complete(Completion completion) {
  if (!beam_search_) {
    int accepted = 0;
    for (const Sequence& sequence : sequences_)
      accepted += sequence.accepted_tokens;
    completion.usage.generated_tokens = accepted;
  }
  // A request that produced its first token (not one dropped while queued).
  if (completion.usage.time_to_first_token > absl::ZeroDuration()) {
    metrics_.ObserveRequestTokens(completion.usage.prompt_tokens,
                                  completion.usage.generated_tokens);
  }
  target_->OnComplete(completion.status, completion.usage);
}

}  // namespace iblip::server
