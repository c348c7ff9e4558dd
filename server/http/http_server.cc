#include "server/http/http_server.h"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "server/http/chat_stream.h"
#include "server/http/static_files.h"
#include "spdlog/spdlog.h"

namespace iblip::server::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using Request = bhttp::request<bhttp::string_body>;

constexpr absl::Duration kPoll = absl::Milliseconds(100);

struct Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)) {}
  tcp::socket socket;
  std::thread thread;
  std::atomic<bool> done{false};
};

}  // namespace

struct HttpServer::Impl {
  Impl(const Options& o, GenerationPipeline& p) : options(o), pipeline(p) {}

  const Options options;
  GenerationPipeline& pipeline;
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  net::io_context io;
  tcp::acceptor acceptor{io};
  std::thread accept_thread;
  std::atomic<bool> stopping{false};
  std::mutex mutex;
  std::list<std::unique_ptr<Connection>> connections;  // guarded by mutex

  void AcceptLoop();
  void ReapLocked();
  void Serve(Connection& connection);
  // Returns whether the connection may serve another request.
  bool Handle(Connection& connection, const Request& request);
  bool Chat(Connection& connection, const Request& request);
  bool StreamChat(Connection& connection, const Request& request,
                  const ChatRequest& chat, const std::string& id,
                  ChatStream& stream, GenerationRequest* generation);
  bool Send(Connection& connection, const Request& request, unsigned status,
            const std::string& content_type, std::string body);
  bool SendError(Connection& connection, const Request& request,
                 const absl::Status& status) {
    return Send(connection, request, HttpStatusFor(status.code()),
                "application/json", ErrorJson(status));
  }
  // Waits for the stream's next event, giving up when the server stops.
  std::optional<ChatStream::Event> NextEvent(ChatStream& stream);
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const Options& options, GenerationPipeline& pipeline) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->impl_ = std::make_unique<Impl>(options, pipeline);
  Impl& impl = *server->impl_;
  boost::system::error_code ec;
  const auto address = net::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("http.host: '", options.host, "' is not an IP address"));
  }
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options.port));
  impl.acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl.acceptor.bind(endpoint, ec);
  if (!ec) impl.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ",
                                               options.host, ":", options.port,
                                               ": ", ec.message()));
  }
  server->port_ = impl.acceptor.local_endpoint().port();
  impl.accept_thread = std::thread([&impl] { impl.AcceptLoop(); });
  return server;
}

HttpServer::~HttpServer() {
  if (!impl_) return;
  impl_->stopping.store(true);
  // Wakes the blocking accept(); then every connection's blocking I/O.
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  impl_->accept_thread.join();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& connection : impl_->connections)
    ::shutdown(connection->socket.native_handle(), SHUT_RDWR);
  for (auto& connection : impl_->connections) connection->thread.join();
}

void HttpServer::Impl::ReapLocked() {
  for (auto it = connections.begin(); it != connections.end();) {
    if ((*it)->done.load()) {
      (*it)->thread.join();
      it = connections.erase(it);
    } else {
      ++it;
    }
  }
}

void HttpServer::Impl::AcceptLoop() {
  while (!stopping.load()) {
    tcp::socket socket(io);
    boost::system::error_code ec;
    acceptor.accept(socket, ec);
    if (ec) continue;  // stopping, or a connection that died at once
    std::lock_guard<std::mutex> lock(mutex);
    ReapLocked();
    if (stopping.load()) return;
    if (static_cast<int>(connections.size()) >= options.max_connections) {
      // Refuse politely without a thread of its own.
      const std::string body = ErrorJson(
          absl::UnavailableError("too many open connections; retry later"));
      const std::string response = absl::StrCat(
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
          "application/json\r\nContent-Length: ",
          body.size(), "\r\nConnection: close\r\n\r\n", body);
      net::write(socket, net::buffer(response), ec);
      continue;
    }
    auto connection = std::make_unique<Connection>(std::move(socket));
    Connection* raw = connection.get();
    connections.push_back(std::move(connection));
    raw->thread = std::thread([this, raw] {
      Serve(*raw);
      raw->done.store(true);
    });
  }
}

void HttpServer::Impl::Serve(Connection& connection) {
  beast::flat_buffer buffer;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(options.max_body_bytes);
    boost::system::error_code ec;
    bhttp::read(connection.socket, buffer, parser, ec);
    if (ec == bhttp::error::body_limit) {
      Request request;
      request.keep_alive(false);
      SendError(connection, request,
                absl::InvalidArgumentError(absl::StrCat(
                    "body: larger than ", options.max_body_bytes, " bytes")));
      break;
    }
    if (ec) break;  // closed, or not HTTP
    const Request request = parser.release();
    if (!Handle(connection, request) || !request.keep_alive()) break;
  }
  boost::system::error_code ignored;
  connection.socket.shutdown(tcp::socket::shutdown_both, ignored);
}

bool HttpServer::Impl::Send(Connection& connection, const Request& request,
                            unsigned status, const std::string& content_type,
                            std::string body) {
  bhttp::response<bhttp::string_body> response{
      static_cast<bhttp::status>(status), request.version()};
  response.set(bhttp::field::server, "iblip-server");
  response.set(bhttp::field::content_type, content_type);
  response.keep_alive(request.keep_alive());
  response.body() = std::move(body);
  response.prepare_payload();
  boost::system::error_code ec;
  bhttp::write(connection.socket, response, ec);
  return !ec;
}

bool HttpServer::Impl::Handle(Connection& connection, const Request& request) {
  const std::string target(request.target());
  const std::string path = target.substr(0, target.find('?'));
  if (request.method() == bhttp::verb::get) {
    if (const StaticFile* file = FindStaticFile(path)) {
      return Send(connection, request, 200, file->content_type,
                  std::string(file->content));
    }
    if (path == "/v1/models") {
      return Send(connection, request, 200, "application/json",
                  ModelsJson(options.model_id, created));
    }
  }
  if (options.auth != nullptr && path.rfind("/v1/", 0) == 0) {
    const auto header = request.find(bhttp::field::authorization);
    const absl::Status auth = options.auth->Check(
        header == request.end() ? absl::string_view()
                                : absl::string_view(header->value().data(),
                                                    header->value().size()));
    if (!auth.ok()) return SendError(connection, request, auth);
  }
  if (path == "/v1/chat/completions") {
    if (request.method() != bhttp::verb::post) {
      return Send(connection, request, 405, "application/json",
                  ErrorJson(absl::InvalidArgumentError(
                      "method: /v1/chat/completions takes POST")));
    }
    return Chat(connection, request);
  }
  return Send(connection, request, 404, "application/json",
              ErrorJson(absl::NotFoundError(
                  absl::StrCat("path: no such endpoint: ", path))));
}

std::optional<ChatStream::Event> HttpServer::Impl::NextEvent(
    ChatStream& stream) {
  while (!stopping.load()) {
    if (auto event = stream.Next(kPoll)) return event;
  }
  return std::nullopt;
}

bool HttpServer::Impl::Chat(Connection& connection, const Request& request) {
  auto chat = ParseChatRequest(request.body(), options.history);
  if (!chat.ok()) return SendError(connection, request, chat.status());
  const std::string id = "chatcmpl-" + pipeline.NewRequestId();
  auto stream = std::make_shared<ChatStream>();
  std::shared_ptr<GenerationRequest> generation;
  pipeline.Start(chat->generate, id, absl::InfiniteFuture(), stream,
                 [&](const std::shared_ptr<GenerationRequest>& created) {
                   generation = created;
                 });
  auto cancel = [&] {
    if (generation) generation->cancelled.store(true);
  };
  if (chat->stream)
    return StreamChat(connection, request, *chat, id, *stream,
                      generation.get());

  std::map<int, ChoiceResult> choices;
  for (;;) {
    auto event = NextEvent(*stream);
    if (!event) return cancel(), false;
    if (!event->delta) {
      if (!event->status.ok())
        return SendError(connection, request,
                         ToOpenAiFieldNames(event->status));
      std::vector<ChoiceResult> ordered;
      for (auto& [index, choice] : choices) ordered.push_back(choice);
      return Send(connection, request, 200, "application/json",
                  CompletionJson(id, absl::ToUnixSeconds(absl::Now()),
                                 options.model_id, ordered, event->usage));
    }
    ChoiceResult& choice = choices[event->delta->index];
    choice.text += event->delta->text;
    if (event->delta->finish_reason != FinishReason::kNone)
      choice.finish_reason = event->delta->finish_reason;
  }
}

bool HttpServer::Impl::StreamChat(Connection& connection,
                                  const Request& request,
                                  const ChatRequest& chat,
                                  const std::string& id, ChatStream& stream,
                                  GenerationRequest* generation) {
  auto cancel = [&] {
    if (generation) generation->cancelled.store(true);
  };
  // The first event decides the status line: an error before any token
  // (validation, a full queue) is a plain HTTP error, not a stream.
  auto event = NextEvent(stream);
  if (!event) return cancel(), false;
  if (!event->delta && !event->status.ok())
    return SendError(connection, request, ToOpenAiFieldNames(event->status));

  bhttp::response<bhttp::empty_body> header{bhttp::status::ok,
                                            request.version()};
  header.set(bhttp::field::server, "iblip-server");
  header.set(bhttp::field::content_type, "text/event-stream");
  header.set(bhttp::field::cache_control, "no-cache");
  header.keep_alive(request.keep_alive());
  header.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> serializer{header};
  boost::system::error_code ec;
  bhttp::write_header(connection.socket, serializer, ec);
  auto write = [&](const std::string& data) {
    if (!ec)
      net::write(connection.socket, bhttp::make_chunk(net::buffer(data)), ec);
    return !ec;
  };
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  std::set<int> started;
  for (;;) {
    if (event->delta) {
      const SequenceDelta& delta = *event->delta;
      const bool first = started.insert(delta.index).second;
      if (!write(ChunkEvent(id, created, options.model_id, delta.index, first,
                            delta.text, delta.finish_reason))) {
        // The client left: stop generating for it (within one step).
        return cancel(), false;
      }
    } else {
      if (!event->status.ok()) {
        write(absl::StrCat(
            "data: ", ErrorJson(ToOpenAiFieldNames(event->status)), "\n\n"));
      } else if (chat.include_usage) {
        write(UsageEvent(id, created, options.model_id, event->usage));
      }
      write(kDoneEvent);
      if (!ec) net::write(connection.socket, bhttp::make_chunk_last(), ec);
      return !ec;
    }
    event = NextEvent(stream);
    if (!event) return cancel(), false;
  }
}

}  // namespace iblip::server::http
