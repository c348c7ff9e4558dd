#include "server/http/chat_reply.h"

#include <vector>

#include "server/pipeline/delta_queue.h"

namespace iblip::server::http {

void ChatReply::SetCanceller(std::function<void()> cancel) {
  bool run_now;
  {
    absl::MutexLock lock(&mutex_);
    cancel_ = cancel;
    run_now = cancel_requested_;
  }
  if (run_now && cancel) cancel();
}

void ChatReply::OnDelta(SequenceDelta delta) {
  absl::MutexLock lock(&mutex_);
  if (done_) return;  // cancelled: nobody will read it
  if (info_.stream) {
    QueueDelta(deltas_, std::move(delta));
  } else {
    ChoiceResult& choice = choices_[delta.index];
    choice.text += delta.text;
    if (delta.finish_reason != FinishReason::kNone)
      choice.finish_reason = delta.finish_reason;
  }
  WakeLocked();
}

void ChatReply::OnComplete(const absl::Status& status,
                           const UsageStats& usage) {
  absl::MutexLock lock(&mutex_);
  if (done_) return;
  done_ = true;
  status_ = status;
  usage_ = usage;
  WakeLocked();
}

void ChatReply::Cancel(const absl::Status& status) {
  std::function<void()> cancel;
  {
    absl::MutexLock lock(&mutex_);
    cancel_requested_ = true;
    cancel = cancel_;
    if (!done_) {
      done_ = true;
      status_ = status;
      WakeLocked();
    }
  }
  if (cancel) cancel();
}

void ChatReply::SetWaker(std::function<void()> wake) {
  // Under the lock: once SetWaker(nullptr) returns, no call is running.
  absl::MutexLock lock(&mutex_);
  waker_ = std::move(wake);
}

HttpResponse ChatReply::ErrorLocked() const {
  return ErrorResponse(ToOpenAiFieldNames(status_));
}

ReplyPart ChatReply::Next() {
  absl::MutexLock lock(&mutex_);
  ReplyPart part;
  if (finished_ || (!done_ && !info_.stream)) return part;
  if (info_.stream) return NextStreamPartLocked();
  finished_ = true;
  part.kind = ReplyPart::Kind::kResponse;
  if (!status_.ok()) {
    part.response = ErrorLocked();
    return part;
  }
  std::vector<ChoiceResult> ordered;
  for (auto& [index, choice] : choices_) ordered.push_back(std::move(choice));
  part.response = JsonResponse(
      200,
      CompletionJson(info_.id, info_.created, info_.model, ordered, usage_));
  return part;
}

ReplyPart ChatReply::NextStreamPartLocked() {
  ReplyPart part;
  if (!head_sent_) {
    if (deltas_.empty() && !done_) return part;
    // An error before any token (validation, a full queue) is a plain HTTP
    // error, not a stream.
    if (deltas_.empty() && !status_.ok()) {
      finished_ = true;
      part.kind = ReplyPart::Kind::kResponse;
      part.response = ErrorLocked();
      return part;
    }
    head_sent_ = true;
    part.kind = ReplyPart::Kind::kStreamStart;
    part.response.content_type = "text/event-stream";
    part.response.headers = {{"Cache-Control", "no-cache"},
                             {"X-Accel-Buffering", "no"}};
    return part;
  }
  for (; !deltas_.empty(); deltas_.pop_front()) {
    const SequenceDelta& delta = deltas_.front();
    const bool first = started_.insert(delta.index).second;
    part.data += ChunkEvent(info_.id, info_.created, info_.model, delta.index,
                            first, delta.text, delta.finish_reason);
  }
  if (done_) {
    finished_ = true;
    part.kind = ReplyPart::Kind::kStreamEnd;
    if (!status_.ok()) {
      part.data += ErrorEvent(ToOpenAiFieldNames(status_));
    } else if (info_.include_usage) {
      part.data += UsageEvent(info_.id, info_.created, info_.model, usage_);
    }
    part.data += kDoneEvent;
  } else if (!part.data.empty()) {
    part.kind = ReplyPart::Kind::kStreamData;
  }
  return part;
}

}  // namespace iblip::server::http
