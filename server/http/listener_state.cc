#include "server/http/listener_state.h"

#include <algorithm>
#include <cstdint>

namespace iblip::server::http {

ListenerState::ListenerState(
    std::string name, HttpLimits limits, std::shared_ptr<const Router> router,
    int max_connections, boost::asio::thread_pool& handlers,
    std::shared_ptr<boost::asio::ssl::context> tls,
    std::function<void(const AccessRecord&)> on_exchange)
    : name_(std::move(name)),
      limits_(limits),
      router_(std::move(router)),
      max_connections_(max_connections),
      handlers_(handlers),
      tls_(std::move(tls)),
      on_exchange_(std::move(on_exchange)) {}

ListenerState::Slot ListenerState::TakeSlot() {
  {
    absl::MutexLock lock(&mutex_);
    if (serving_ < max_connections_) {
      ++serving_;
      return Slot::kServe;
    }
  }
  // Oldest first. (The sessions are released outside the lock: a last
  // reference would unregister, which locks.)
  std::vector<std::shared_ptr<SessionControl>> waiting = LiveSessions();
  std::sort(waiting.begin(), waiting.end(), [](const auto& a, const auto& b) {
    const int64_t x = a->WaitingSinceNanos(), y = b->WaitingSinceNanos();
    return (x == 0 ? INT64_MAX : x) < (y == 0 ? INT64_MAX : y);
  });
  bool evicted = false;
  for (const auto& session : waiting) {
    if (session->WaitingSinceNanos() == 0) break;
    if ((evicted = session->Evict())) break;
  }
  absl::MutexLock lock(&mutex_);
  if (evicted) {
    // Its slot is ours; the count drops back when it is gone.
    ++serving_;
    return Slot::kServe;
  }
  // Refusing costs a little too (a 503 written, a TLS handshake): bounded
  // the same way.
  if (refusing_ < max_connections_) {
    ++refusing_;
    return Slot::kRefuse;
  }
  return Slot::kDrop;
}

uint64_t ListenerState::Register(Slot, std::weak_ptr<SessionControl> session) {
  absl::MutexLock lock(&mutex_);
  const uint64_t id = next_id_++;
  sessions_.emplace(id, std::move(session));
  return id;
}

void ListenerState::Unregister(uint64_t id, Slot slot) {
  absl::MutexLock lock(&mutex_);
  sessions_.erase(id);
  if (slot == Slot::kServe) --serving_;
  if (slot == Slot::kRefuse) --refusing_;
}

std::vector<std::shared_ptr<SessionControl>> ListenerState::LiveSessions() {
  absl::MutexLock lock(&mutex_);
  std::vector<std::shared_ptr<SessionControl>> live;
  for (auto& [id, weak] : sessions_) {
    if (auto session = weak.lock()) live.push_back(std::move(session));
  }
  return live;
}

bool ListenerState::WaitForNoSessions(absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return sessions_.empty();
  };
  return mutex_.AwaitWithTimeout(absl::Condition(&none), timeout);
}

void ListenerState::Record(const Exchange& exchange, const std::string& peer) {
  AccessRecord record;
  record.listener = name_;
  record.peer = peer;
  record.method = exchange.method.empty() ? "-" : exchange.method;
  record.target = exchange.target.empty() ? "-" : exchange.target;
  record.route = exchange.route;
  record.status = exchange.status;
  record.bytes_out = exchange.bytes_out;
  record.duration = absl::Now() - exchange.start;
  record.note = exchange.note;
  LogAccess(record);
  if (on_exchange_) on_exchange_(record);
}

}  // namespace iblip::server::http
