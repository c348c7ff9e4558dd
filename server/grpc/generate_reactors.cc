#include "server/grpc/generate_reactors.h"

#include "absl/time/time.h"
#include "server/pipeline/delta_queue.h"
#include "server/grpc/status_util.h"
#include "server/grpc/wire_request.h"
#include "spdlog/spdlog.h"

namespace iblip::server {

void DetachableSink::OnDelta(SequenceDelta delta) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  if (target_ != nullptr) target_->OnDelta(std::move(delta));
}

void DetachableSink::OnComplete(const absl::Status& status,
                                const UsageStats& usage) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  if (target_ != nullptr) target_->OnComplete(status, usage);
}

void DetachableSink::Detach() {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  target_ = nullptr;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStopSequence:
      return v1::FINISH_REASON_STOP_SEQUENCE;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
    case FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

v1::Usage ToProto(const UsageStats& usage) {
  v1::Usage out;
  out.set_prompt_tokens(usage.prompt_tokens);
  out.set_image_tokens(usage.image_tokens);
  out.set_generated_tokens(usage.generated_tokens);
  out.set_queue_time_us(absl::ToInt64Microseconds(usage.queue_time));
  out.set_time_to_first_token_us(
      absl::ToInt64Microseconds(usage.time_to_first_token));
  out.set_total_time_us(absl::ToInt64Microseconds(usage.total_time));
  out.set_seed(usage.seed);
  return out;
}

// ---------------------------------------------------------------------------
// StreamGenerateReactor

void StreamGenerateReactor::Attach(std::shared_ptr<GenerationRequest> request,
                                   std::shared_ptr<DetachableSink> sink) {
  request_ = std::move(request);
  sink_ = std::move(sink);
}

v1::GenerateResponse StreamGenerateReactor::ToMessage(
    SequenceDelta delta) const {
  v1::GenerateResponse message;
  message.set_request_id(request_id_);
  message.set_index(delta.index);
  message.set_text(std::move(delta.text));
  message.mutable_token_ids()->Add(delta.token_ids.begin(),
                                   delta.token_ids.end());
  message.set_elapsed_us(absl::ToInt64Microseconds(delta.elapsed));
  message.set_finish_reason(ToProto(delta.finish_reason));
  return message;
}

void StreamGenerateReactor::OnDelta(SequenceDelta delta) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (finished_ || finish_requested_) return;
  QueueDelta(pending_, std::move(delta));
  Pump(lock);
}

void StreamGenerateReactor::OnComplete(const absl::Status& status,
                                       const UsageStats& usage) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (finished_ || finish_requested_) return;
  if (status.ok()) {
    usage_message_.emplace();
    usage_message_->set_request_id(request_id_);
    usage_message_->set_elapsed_us(absl::ToInt64Microseconds(usage.total_time));
    *usage_message_->mutable_usage() = ToProto(usage);
  }
  finish_requested_ = true;
  final_status_ = ToGrpcStatus(status);
  Pump(lock);
}

void StreamGenerateReactor::Pump(std::unique_lock<std::mutex>& lock) {
  if (writing_ || finished_) return;
  if (!pending_.empty() || usage_message_) {
    writing_ = true;
    v1::GenerateResponse message;
    if (!pending_.empty()) {
      message = ToMessage(std::move(pending_.front()));
      pending_.pop_front();
    } else {
      message = std::move(*usage_message_);
      usage_message_.reset();
    }
    lock.unlock();
    // in_flight_ is ours alone while writing_ is set.
    if (grpc::Status status = SerializeToWire(message, &in_flight_);
        !status.ok()) {
      lock.lock();
      writing_ = false;
      pending_.clear();
      usage_message_.reset();
      finish_requested_ = true;
      final_status_ = status;
      return Pump(lock);
    }
    StartWrite(&in_flight_);
    return;
  }
  if (finish_requested_) {
    finished_ = true;
    const grpc::Status status = final_status_;
    lock.unlock();
    Finish(status);
  }
}

void StreamGenerateReactor::OnWriteDone(bool ok) {
  std::unique_lock<std::mutex> lock(mutex_);
  writing_ = false;
  if (!ok) {
    // The client is gone: stop generating for it and end the RPC. Logged,
    // since the engine may have logged the request as finished already.
    spdlog::info("request {}: a write failed, the stream ends undelivered",
                 request_id_);
    if (request_) request_->cancelled.store(true);
    pending_.clear();
    usage_message_.reset();
    if (!finish_requested_) {
      finish_requested_ = true;
      final_status_ =
          grpc::Status(grpc::StatusCode::CANCELLED, "client disconnected");
    }
  }
  Pump(lock);
}

void StreamGenerateReactor::OnCancel() {
  if (request_) request_->cancelled.store(true);
  std::unique_lock<std::mutex> lock(mutex_);
  if (!finished_) {
    spdlog::info("request {}: cancelled (client, deadline or shutdown) "
                 "before the stream ended",
                 request_id_);
  }
  pending_.clear();
  usage_message_.reset();
  if (!finish_requested_) {
    finish_requested_ = true;
    final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
  Pump(lock);
}

void StreamGenerateReactor::OnDone() {
  if (sink_) sink_->Detach();
  delete this;
}

// ---------------------------------------------------------------------------
// UnaryGenerateReactor

void UnaryGenerateReactor::Attach(std::shared_ptr<GenerationRequest> request,
                                  std::shared_ptr<DetachableSink> sink) {
  request_ = std::move(request);
  sink_ = std::move(sink);
}

void UnaryGenerateReactor::OnDelta(SequenceDelta delta) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  while (message_.sequences_size() <= delta.index) message_.add_sequences();
  v1::Sequence& sequence = *message_.mutable_sequences(delta.index);
  sequence.mutable_text()->append(delta.text);
  sequence.mutable_token_ids()->Add(delta.token_ids.begin(),
                                    delta.token_ids.end());
  if (delta.finish_reason != FinishReason::kNone) {
    sequence.set_finish_reason(ToProto(delta.finish_reason));
  }
}

void UnaryGenerateReactor::OnComplete(const absl::Status& status,
                                      const UsageStats& usage) {
  grpc::Status result = ToGrpcStatus(status);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    message_.set_request_id(request_id_);
    *message_.mutable_usage() = ToProto(usage);
    if (result.ok()) result = SerializeToWire(message_, response_);
  }
  Finish(result);
}

void UnaryGenerateReactor::OnCancel() {
  if (request_) request_->cancelled.store(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
  }
  Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
}

void UnaryGenerateReactor::OnDone() {
  if (sink_) sink_->Detach();
  delete this;
}

}  // namespace iblip::server
