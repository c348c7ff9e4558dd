#include "server/http/chat_stream.h"

#include "server/pipeline/delta_queue.h"

namespace iblip::server::http {

void ChatStream::OnDelta(SequenceDelta delta) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    QueueDelta(deltas_, std::move(delta));
  }
  ready_.notify_one();
}

void ChatStream::OnComplete(const absl::Status& status,
                            const UsageStats& usage) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    status_ = status;
    usage_ = usage;
  }
  ready_.notify_one();
}

std::optional<ChatStream::Event> ChatStream::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!ready_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                       [this] { return !deltas_.empty() || done_; })) {
    return std::nullopt;
  }
  Event event;
  if (!deltas_.empty()) {
    event.delta = std::move(deltas_.front());
    deltas_.pop_front();
  } else {
    event.status = status_;
    event.usage = usage_;
  }
  return event;
}

}  // namespace iblip::server::http
