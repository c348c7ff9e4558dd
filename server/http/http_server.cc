#include "server/http/http_server.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/http/listener_state.h"
#include "spdlog/spdlog.h"

namespace iblip::server::http {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

constexpr absl::Duration kStopGrace = absl::Seconds(2);
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

// An I/O thread: a handler that throws (it should not) costs its request,
// not the thread or the process.
void RunIo(net::io_context& io) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("http: an I/O handler threw: {}", e.what());
    } catch (...) {
      spdlog::error("http: an I/O handler threw a non-exception");
    }
  }
}

}  // namespace

struct HttpServer::Impl {
  struct Bound {
    std::shared_ptr<ListenerState> state;
    std::unique_ptr<tcp::acceptor> acceptor;  // on a strand of its own
    std::unique_ptr<net::steady_timer> retry;
    int port = 0;
  };

  explicit Impl(Options o)
      : options(std::move(o)),
        handlers(static_cast<size_t>(options.handler_threads)),
        work(net::make_work_guard(io)) {}

  void Accept(Bound& bound) {
    bound.acceptor->async_accept(
        net::make_strand(io),
        [this, &bound](error_code ec, tcp::socket socket) {
          if (!bound.acceptor->is_open()) return;  // stopping
          if (ec) {
            // Out of file descriptors, say: try again shortly, not in a
            // tight loop.
            spdlog::warn("http {}: accept failed: {}", bound.state->name(),
                         ec.message());
            bound.retry->expires_after(kAcceptRetry);
            bound.retry->async_wait([this, &bound](error_code e) {
              if (!e && bound.acceptor->is_open()) Accept(bound);
            });
            return;
          }
          StartSession(std::move(socket), bound.state);
          Accept(bound);
        });
  }

  // Declaration order is destruction order backwards: the listeners go
  // first, the io_context (and with it the sessions) last.
  const Options options;
  net::io_context io;
  net::thread_pool handlers;
  net::executor_work_guard<net::io_context::executor_type> work;
  std::vector<std::unique_ptr<Bound>> listeners;
  std::vector<std::thread> threads;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Options options) {
  if (options.io_threads < 1 || options.handler_threads < 1)
    return absl::InvalidArgumentError(
        "http: io_threads and handler_threads must be >= 1");
  auto impl = std::make_unique<Impl>(std::move(options));
  for (const Listener& listener : impl->options.listeners) {
    std::shared_ptr<net::ssl::context> tls;
    if (listener.tls.enabled()) {
      ASSIGN_OR_RETURN(tls, MakeTlsContext(listener.tls));
    }
    auto bound = std::make_unique<Impl::Bound>();
    bound->state = std::make_shared<ListenerState>(
        listener.name, listener.limits, listener.router,
        listener.max_connections, impl->handlers, std::move(tls),
        impl->options.on_exchange);
    auto strand = net::make_strand(impl->io);
    bound->acceptor = std::make_unique<tcp::acceptor>(strand);
    bound->retry = std::make_unique<net::steady_timer>(strand);
    error_code ec;
    const auto address = net::ip::make_address(listener.host, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("host: '", listener.host, "' is not an IP address"));
    }
    const tcp::endpoint endpoint(address, static_cast<uint16_t>(listener.port));
    tcp::acceptor& acceptor = *bound->acceptor;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen for HTTP (", listener.name, ") on ",
                       listener.host, ":", listener.port, ": ", ec.message()));
    }
    bound->port = acceptor.local_endpoint().port();
    impl->listeners.push_back(std::move(bound));
  }
  for (int i = 0; i < impl->options.io_threads; ++i)
    impl->threads.emplace_back([io = &impl->io] { RunIo(*io); });
  for (auto& bound : impl->listeners) {
    net::post(bound->acceptor->get_executor(),
              [impl = impl.get(), b = bound.get()] { impl->Accept(*b); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port(absl::string_view name) const {
  for (const auto& bound : impl_->listeners) {
    if (bound->state->name() == name) return bound->port;
  }
  return 0;
}

void HttpServer::AbortReplies(const absl::Status& status) {
  for (const auto& bound : impl_->listeners) {
    for (auto& session : bound->state->LiveSessions())
      session->Shutdown(status);
  }
}

HttpServer::~HttpServer() {
  Impl& impl = *impl_;
  for (auto& bound : impl.listeners) {
    net::post(bound->acceptor->get_executor(), [b = bound.get()] {
      error_code ignored;
      b->acceptor->close(ignored);
      b->retry->cancel();
    });
  }
  AbortReplies(absl::UnavailableError("the server is shutting down"));
  const absl::Time deadline = absl::Now() + kStopGrace;
  for (auto& bound : impl.listeners) {
    if (!bound->state->WaitForNoSessions(deadline - absl::Now())) {
      spdlog::warn("http {}: connections still open at shutdown; closing them",
                   bound->state->name());
    }
  }
  impl.handlers.join();
  impl.work.reset();
  impl.io.stop();
  for (std::thread& thread : impl.threads) thread.join();
  // Nothing runs on the strands now: make the replies that outlive their
  // connection (their generation still finishing) stop posting to them.
  for (auto& bound : impl.listeners) {
    for (auto& session : bound->state->LiveSessions()) session->DetachReply();
  }
}

}  // namespace iblip::server::http
