#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/http/access_log.h"
#include "server/http/http_limits.h"
#include "server/http/router.h"
#include "server/http/tls_context.h"

namespace iblip::server::http {

// The process's HTTP: Boost.Beast on Asio, serving any number of listeners
// (the chat API, /metrics) from one small set of threads.
//
// Threads (all created here with the default stack, which libtorch's static
// TLS fits in; prometheus-cpp's civetweb did not): `io_threads` run every
// connection's reads, writes and timers asynchronously, so a slow or idle
// client holds no thread; `handler_threads` run route handlers (JSON
// parsing, serializing metrics), so CPU work never delays I/O.
//
// Per connection: see session.cc. At a listener's `max_connections`, the
// connection that has waited longest for a request is closed to make room;
// when every connection is busy, new ones get a 503 at once (bounded in
// turn: beyond twice the bound they are closed unanswered). Every request,
// refused ones included, is logged (LogAccess) and passed to `on_exchange`
// (metrics).
class HttpServer {
 public:
  struct Listener {
    std::string name;  // "api", "metrics": in the log and the metrics
    std::string host = "127.0.0.1";
    int port = 0;  // 0 picks a free port
    int max_connections = 256;
    HttpLimits limits;
    std::shared_ptr<const Router> router;
    TlsFiles tls;  // none: plaintext
  };
  struct Options {
    int io_threads = 2;
    int handler_threads = 2;
    std::vector<Listener> listeners;
    // Called for every request when it ends (on an I/O thread; quick).
    std::function<void(const AccessRecord&)> on_exchange;
  };

  // Binds every listener, then serves. Errors name the listener and address.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Options options);
  // Stops accepting, ends every connection (pending replies end with
  // UNAVAILABLE, given up to 2 s to be written) and joins the threads.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port of the listener named `name`; 0 when there is none.
  int port(absl::string_view name) const;

  // Ends every connection's pending reply with `status` (a stream gets an
  // error event and [DONE]) and closes every connection once its answer is
  // written. For the end of a drain; the listeners keep accepting.
  void AbortReplies(const absl::Status& status);

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iblip::server::http
