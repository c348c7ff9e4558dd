#pragma once

// Internal to the HTTP server: what one listener's connections share.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/http/access_log.h"
#include "server/http/exchange.h"
#include "server/http/http_limits.h"
#include "server/http/router.h"

namespace iblip::server::http {

// What the server may do to a connection from outside its strand.
class SessionControl {
 public:
  virtual ~SessionControl() = default;
  // Thread-safe: ends the connection's reply with `why` (an error response,
  // or an error event and [DONE]), then closes it; an idle connection
  // closes at once.
  virtual void Shutdown(const absl::Status& why) = 0;
  // Only once the I/O threads have stopped: the reply stops waking the
  // connection (its engine may still deliver results for a while).
  virtual void DetachReply() = 0;
  // Since when the connection has been waiting for a request (idle, or its
  // header still arriving); 0 while it is busy with one. Thread-safe.
  virtual int64_t WaitingSinceNanos() const = 0;
  // Closes the connection if it is still waiting for a request. False when
  // it is busy (or evicted already). Thread-safe.
  virtual bool Evict() = 0;
};

class ListenerState {
 public:
  // Whether a new connection is served, answered 503 at once (over the
  // bound), or closed unanswered (even the refusals are at their bound).
  enum class Slot { kServe, kRefuse, kDrop };

  ListenerState(std::string name, HttpLimits limits,
                std::shared_ptr<const Router> router, int max_connections,
                boost::asio::thread_pool& handlers,
                std::shared_ptr<boost::asio::ssl::context> tls,
                std::function<void(const AccessRecord&)> on_exchange);

  const std::string& name() const { return name_; }
  const HttpLimits& limits() const { return limits_; }
  const Router& router() const { return *router_; }
  boost::asio::thread_pool& handlers() { return handlers_; }
  boost::asio::ssl::context* tls() const { return tls_.get(); }

  // At the bound, the connection that has waited longest for a request
  // (idle keep-alive, or a header trickling in) is closed to make room, so
  // clients that hold connections without using them cannot lock others
  // out; only when every connection is busy does a new one get 503.
  Slot TakeSlot();
  // A session that took `slot`, while it lives.
  uint64_t Register(Slot slot, std::weak_ptr<SessionControl> session);
  void Unregister(uint64_t id, Slot slot);
  std::vector<std::shared_ptr<SessionControl>> LiveSessions();
  // Waits up to `timeout` for every connection to end; false on timeout.
  bool WaitForNoSessions(absl::Duration timeout);

  // Logs the exchange and tells the observer (metrics).
  void Record(const Exchange& exchange, const std::string& peer);

 private:
  const std::string name_;
  const HttpLimits limits_;
  const std::shared_ptr<const Router> router_;
  const int max_connections_;
  boost::asio::thread_pool& handlers_;
  const std::shared_ptr<boost::asio::ssl::context> tls_;
  const std::function<void(const AccessRecord&)> on_exchange_;

  absl::Mutex mutex_;
  int serving_ ABSL_GUARDED_BY(mutex_) = 0;
  int refusing_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mutex_) = 1;
  std::map<uint64_t, std::weak_ptr<SessionControl>> sessions_
      ABSL_GUARDED_BY(mutex_);
};

// Serves an accepted connection (its socket on a strand of its own) until
// it closes: takes a slot, then reads, answers and writes asynchronously.
void StartSession(boost::asio::ip::tcp::socket socket,
                  std::shared_ptr<ListenerState> listener);

}  // namespace iblip::server::http
