// One HTTP connection on Boost.Beast, asynchronous on its own strand, with a
// deadline on every wait (tcp_stream::expires_after, plus a timer for the
// idle wait) and Beast's parser limits. No thread waits for a client: a
// connection that is slow or silent costs its socket and buffers only.
//
// Per request:
//   [TLS handshake (header timeout)]
//   wait for a first byte (idle timeout; closes silently)
//   -> header (header timeout, header limit) -> AdmitRequest: limits, route,
//      method, API key, CORS, all before any body byte is read
//   -> [100 Continue] -> body (body timeout, body limit)
//   -> handler on the handler pool (catch-all), while a read watches for a
//      client that leaves (its reply is then cancelled)
//   -> response, or the PendingReply pulled part by part, each write under
//      the write timeout
//   -> access log + metrics; keep-alive: next request.

#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/buffers_cat.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <optional>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "server/http/listener_state.h"
#include "spdlog/spdlog.h"

namespace iblip::server::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kLingerChunk = 64 * 1024;
// After refusing a request whose body is still coming, its bytes are read
// and dropped for this long, so the client sees the answer rather than a
// reset connection.
constexpr absl::Duration kLingerTime = absl::Seconds(2);
constexpr absl::Duration kTlsShutdownTime = absl::Seconds(1);

std::chrono::nanoseconds Chrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}

bool ClosedByPeer(const error_code& ec) {
  return ec == net::error::eof || ec == bhttp::error::end_of_stream ||
         ec == bhttp::error::partial_message ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::ssl::error::stream_truncated;
}

std::string PeerOf(const tcp::socket& socket) {
  error_code ec;
  const tcp::endpoint endpoint = socket.remote_endpoint(ec);
  if (ec) return "?";
  return absl::StrCat(endpoint.address().to_string(), ":", endpoint.port());
}

template <class Stream>
class Session final : public SessionControl,
                      public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  Session(Stream stream, std::shared_ptr<ListenerState> listener,
          ListenerState::Slot slot, std::string peer)
      : stream_(std::move(stream)),
        listener_(std::move(listener)),
        slot_(slot),
        peer_(std::move(peer)),
        executor_(stream_.get_executor()),
        idle_timer_(executor_) {}

  ~Session() override {
    if (reply_) {
      if (!reply_done_)
        reply_->Cancel(absl::CancelledError("the connection closed"));
      reply_->SetWaker(nullptr);
    }
    listener_->Unregister(id_, slot_);
  }

  void Run() {
    id_ = listener_->Register(slot_, this->weak_from_this());
    if constexpr (kTls) {
      SetWaiting(slot_ == ListenerState::Slot::kServe);
      Tcp().expires_after(Chrono(Limits().header_timeout));
      stream_.async_handshake(
          net::ssl::stream_base::server,
          beast::bind_front_handler(&Session::OnHandshake, Self()));
    } else {
      Begin();
    }
  }

  void Shutdown(const absl::Status& why) override {
    net::post(executor_, [self = Self(), why] { self->OnShutdown(why); });
  }

  void DetachReply() override {
    if (reply_) reply_->SetWaker(nullptr);
  }

  int64_t WaitingSinceNanos() const override { return waiting_since_.load(); }

  bool Evict() override {
    if (waiting_since_.exchange(0) == 0) return false;
    net::post(executor_, [self = Self()] {
      if (!self->waiting_ || self->closing_) return;  // busy since
      if (self->exchange_open_) {
        self->exchange_.note =
            "closed at http.max_connections: its header was still arriving";
      }
      self->CloseNow();
    });
    return true;
  }

 private:
  std::shared_ptr<Session> Self() { return this->shared_from_this(); }
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }
  const HttpLimits& Limits() const { return listener_->limits(); }

  // Waiting for a request (TLS handshake, idle, header arriving): a connection
  // TakeSlot may close to make room.
  void SetWaiting(bool waiting) {
    waiting_ = waiting;
    waiting_since_.store(waiting ? absl::GetCurrentTimeNanos() : 0);
  }

  void OnHandshake(error_code ec) {
    SetWaiting(false);
    if (closed_) return;
    if (ec) {
      exchange_.start = absl::Now();
      exchange_.note = absl::StrCat("TLS handshake failed: ", ec.message());
      exchange_open_ = true;
      return CloseNow();
    }
    Begin();
  }

  void Begin() {
    if (slot_ != ListenerState::Slot::kRefuse) return AwaitRequest();
    exchange_open_ = true;
    exchange_.start = absl::Now();
    exchange_.note = "over http.max_connections";
    Refuse(ErrorResponse(absl::UnavailableError(
        "too many open connections (http.max_connections); retry later")));
  }

  void OnShutdown(const absl::Status& why) {
    if (closed_ || stopping_) return;
    stopping_ = true;
    stop_status_ = why;
    if (reply_ && !reply_done_) {
      // Its last part (an error, or an error event and [DONE]) is written,
      // then FinishExchange closes.
      reply_->Cancel(why);
      return;
    }
    if (handler_running_ || writing_) return;  // ends after it
    if (exchange_open_) exchange_.note = "the server is shutting down";
    CloseNow();
  }

  // ---- reading a request ----

  void AwaitRequest() {
    if (stopping_) return Close();
    if (buffer_.size() > 0) return ReadHeader();  // pipelined
    SetWaiting(true);
    idle_armed_ = true;
    idle_timer_.expires_after(Chrono(Limits().idle_timeout));
    idle_timer_.async_wait([weak = this->weak_from_this()](error_code ec) {
      auto self = weak.lock();
      if (!ec && self && self->idle_armed_ && !self->closed_) self->CloseNow();
    });
    Watch();
  }

  // A read for the next request's first bytes, which also notices a client
  // that leaves while its request is being answered.
  void Watch() {
    if (watching_ || closing_) return;
    watching_ = true;
    Tcp().expires_never();  // a write in flight keeps its own deadline
    stream_.async_read_some(
        buffer_.prepare(kReadChunk),
        beast::bind_front_handler(&Session::OnWatchRead, Self()));
  }

  void OnWatchRead(error_code ec, size_t bytes) {
    watching_ = false;
    idle_armed_ = false;
    idle_timer_.cancel();
    // Aborted: whoever closed the socket (a write timing out, shutdown)
    // handles it.
    if (closing_ || ec == net::error::operation_aborted) return;
    if (ec) {
      if (exchange_open_) {
        exchange_.note = "the client closed the connection";
        if (reply_ && !reply_done_)
          reply_->Cancel(absl::CancelledError("the client disconnected"));
      }
      return CloseNow();
    }
    buffer_.commit(bytes);
    // Bytes of a pipelined request wait until the current one is answered.
    if (!exchange_open_) ReadHeader();
  }

  void ReadHeader() {
    exchange_ = Exchange();
    exchange_.start = absl::Now();
    exchange_open_ = true;
    SetWaiting(true);
    parser_.emplace();
    ConfigureParser(*parser_, Limits());
    Tcp().expires_after(Chrono(Limits().header_timeout));
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session::OnHeader, Self()));
  }

  void OnHeader(error_code ec, size_t) {
    SetWaiting(false);
    if (closing_) return;
    if (ec) return OnReadError(ec, "header");
    Admission admission =
        AdmitRequest(*parser_, listener_->router(), Limits(), exchange_);
    if (admission.answer) {
      // A body the client may still send is not read: answer, then close.
      if (!parser_->is_done()) return Refuse(std::move(*admission.answer));
      return WriteResponse(std::move(*admission.answer));
    }
    route_ = admission.route;
    if (admission.expect_continue && !parser_->is_done()) {
      continue_.emplace(ContinueResponse());
      writing_ = true;
      Tcp().expires_after(Chrono(Limits().write_timeout));
      bhttp::async_write(
          stream_, *continue_,
          beast::bind_front_handler(&Session::OnContinueWritten, Self()));
      return;
    }
    ReadBody();
  }

  void OnContinueWritten(error_code ec, size_t) {
    writing_ = false;
    if (closing_) return;
    if (ec) {
      exchange_.note =
          absl::StrCat("writing 100 Continue failed: ", ec.message());
      return CloseNow();
    }
    ReadBody();
  }

  void ReadBody() {
    if (parser_->is_done()) return Dispatch();
    Tcp().expires_after(Chrono(Limits().body_timeout));
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::OnBody, Self()));
  }

  void OnBody(error_code ec, size_t) {
    if (closing_) return;
    if (ec) return OnReadError(ec, "body");
    Dispatch();
  }

  void OnReadError(const error_code& ec, const char* part) {
    if (ec == beast::error::timeout) {
      exchange_.note = absl::StrCat("timed out reading the ", part, " (http.",
                                    part, "_timeout_s)");
      return CloseNow();  // the timeout closed the socket already
    }
    if (ClosedByPeer(ec) || ec == net::error::operation_aborted) {
      exchange_.note = absl::StrCat("the connection closed during the ", part);
      return CloseNow();
    }
    NoteRequestLine(*parser_, exchange_);
    Refuse(UnreadableRequestResponse(ec, *parser_, Limits()));
  }

  // ---- answering ----

  void Dispatch() {
    HttpRequest request = TakeRequest(*parser_);
    parser_.reset();
    handler_running_ = true;
    // Watch for a client that leaves; bytes it already pipelined are read
    // after this answer (two reads at once would share the buffer).
    if (buffer_.size() == 0) Watch();
    net::post(listener_->handlers(), [self = Self(), route = route_,
                                      request = std::move(request)]() mutable {
      Reply reply = RunHandler(*route, request);
      net::post(self->executor_, [self, reply = std::move(reply)]() mutable {
        self->OnReply(std::move(reply));
      });
    });
  }

  void OnReply(Reply reply) {
    handler_running_ = false;
    if (closing_) {
      if (reply.pending)
        reply.pending->Cancel(absl::CancelledError("the client disconnected"));
      return;
    }
    if (!reply.pending) return WriteResponse(std::move(reply.response));
    reply_ = std::move(reply.pending);
    reply_done_ = false;
    reply_->SetWaker([weak = this->weak_from_this(), executor = executor_] {
      net::post(executor, [weak] {
        if (auto self = weak.lock()) self->Pump();
      });
    });
    if (stopping_) reply_->Cancel(stop_status_);
    Pump();
  }

  // Writes the reply's next part, if it has one and no write is in flight.
  void Pump() {
    if (!reply_ || reply_done_ || writing_ || closing_) return;
    ReplyPart part = reply_->Next();
    switch (part.kind) {
      case ReplyPart::Kind::kNotYet:
        return;
      case ReplyPart::Kind::kResponse:
        reply_done_ = true;
        return WriteResponse(std::move(part.response));
      case ReplyPart::Kind::kStreamStart:
        return WriteStreamHead(part.response);
      case ReplyPart::Kind::kStreamData:
        return WriteStreamData(std::move(part.data), false);
      case ReplyPart::Kind::kStreamEnd:
        reply_done_ = true;
        return WriteStreamData(std::move(part.data), true);
    }
  }

  // Answers, then closes without reading what the client still sends.
  void Refuse(HttpResponse response) {
    close_after_write_ = true;
    linger_ = true;
    WriteResponse(std::move(response));
  }

  void WriteResponse(HttpResponse response) {
    exchange_.status = response.status;
    keep_alive_ = exchange_.keep_alive && !close_after_write_ && !stopping_;
    response_.emplace(
        ToBeastResponse(std::move(response), exchange_, keep_alive_));
    BeginWrite();
    bhttp::async_write(stream_, *response_,
                       beast::bind_front_handler(&Session::OnWritten, Self()));
  }

  void WriteStreamHead(const HttpResponse& head) {
    exchange_.status = head.status;
    keep_alive_ = exchange_.keep_alive && !stopping_;
    chunked_ = exchange_.version >= 11;
    stream_head_.emplace(ToStreamHead(head, exchange_, keep_alive_));
    keep_alive_ = keep_alive_ && chunked_;
    head_serializer_.emplace(*stream_head_);
    BeginWrite();
    bhttp::async_write_header(
        stream_, *head_serializer_,
        beast::bind_front_handler(&Session::OnWritten, Self()));
  }

  void WriteStreamData(std::string data, bool end) {
    out_data_ = std::move(data);
    BeginWrite();
    auto done = beast::bind_front_handler(&Session::OnWritten, Self());
    if (!chunked_) {
      net::async_write(stream_, net::buffer(out_data_), std::move(done));
    } else if (!end) {
      net::async_write(stream_, bhttp::make_chunk(net::buffer(out_data_)),
                       std::move(done));
    } else if (out_data_.empty()) {  // an empty chunk would end it early
      net::async_write(stream_, bhttp::make_chunk_last(), std::move(done));
    } else {
      net::async_write(
          stream_,
          beast::buffers_cat(bhttp::make_chunk(net::buffer(out_data_)),
                             bhttp::make_chunk_last()),
          std::move(done));
    }
  }

  void BeginWrite() {
    writing_ = true;
    Tcp().expires_after(Chrono(Limits().write_timeout));
  }

  void OnWritten(error_code ec, size_t bytes) {
    writing_ = false;
    exchange_.bytes_out += bytes;
    if (closing_) return;
    if (ec) {
      exchange_.note = ec == beast::error::timeout
                           ? "the client stopped reading (http.write_timeout_s)"
                           : absl::StrCat("write failed: ", ec.message());
      if (reply_ && !reply_done_)
        reply_->Cancel(absl::CancelledError("the client stopped reading"));
      return CloseNow();
    }
    if (reply_ && !reply_done_) return Pump();
    FinishExchange();
  }

  void FinishExchange() {
    Record();
    if (reply_) {
      reply_->SetWaker(nullptr);
      reply_.reset();
    }
    response_.reset();
    head_serializer_.reset();
    stream_head_.reset();
    continue_.reset();
    out_data_.clear();
    route_ = nullptr;
    if (close_after_write_ || !keep_alive_ || stopping_) return Close();
    AwaitRequest();
  }

  void Record() {
    if (!exchange_open_) return;
    exchange_open_ = false;
    listener_->Record(exchange_, peer_);
  }

  // ---- closing ----

  // After the last answer: when a refused body may still be coming, a
  // bounded read-and-drop of it first (else closing with unread bytes
  // resets the connection and the client may never see the answer); then
  // TLS close_notify, or a TCP half-close.
  void Close() {
    if (closing_) return;
    closing_ = true;
    idle_armed_ = false;
    idle_timer_.cancel();
    if (!linger_ || watching_) return FinishClose();
    if constexpr (!kTls) {  // the answer is complete: say so at once
      error_code ignored;
      Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
    linger_until_ = absl::Now() + kLingerTime;
    Linger();
  }

  void Linger() {
    const absl::Duration left = linger_until_ - absl::Now();
    if (left <= absl::ZeroDuration()) return FinishClose();
    if (!linger_buffer_)
      linger_buffer_ = std::make_unique<char[]>(kLingerChunk);
    Tcp().expires_after(Chrono(left));
    stream_.async_read_some(net::buffer(linger_buffer_.get(), kLingerChunk),
                            [self = Self()](error_code ec, size_t) {
                              if (ec) return self->FinishClose();
                              self->Linger();
                            });
  }

  void FinishClose() {
    if (closed_) return;
    error_code ignored;
    if constexpr (kTls) {
      if (watching_) Tcp().socket().cancel(ignored);
      Tcp().expires_after(Chrono(kTlsShutdownTime));
      stream_.async_shutdown([self = Self()](error_code) { self->CloseNow(); });
    } else {
      Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
      CloseNow();
    }
  }

  // Closes the socket now; whatever is in flight completes with an error.
  void CloseNow() {
    if (closed_) return;
    closed_ = closing_ = true;
    SetWaiting(false);
    idle_armed_ = false;
    idle_timer_.cancel();
    if (exchange_open_ && exchange_.note.empty())
      exchange_.note = "closed without an answer";
    Record();
    if (reply_ && !reply_done_) {
      reply_->Cancel(absl::CancelledError("the connection closed"));
      reply_done_ = true;
    }
    Tcp().close();
  }

  Stream stream_;
  const std::shared_ptr<ListenerState> listener_;
  const ListenerState::Slot slot_;
  const std::string peer_;
  const net::any_io_executor executor_;  // the connection's strand
  net::steady_timer idle_timer_;
  uint64_t id_ = 0;
  bool waiting_ = false;                   // see SetWaiting
  std::atomic<int64_t> waiting_since_{0};  // read by other threads

  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  const Router::Route* route_ = nullptr;
  Exchange exchange_;
  bool exchange_open_ = false;  // a request is being read or answered

  std::shared_ptr<PendingReply> reply_;
  bool reply_done_ = false;  // its last part is written or in flight
  bool handler_running_ = false;

  std::optional<BeastResponse> response_;
  std::optional<BeastStreamHead> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> head_serializer_;
  std::optional<BeastStreamHead> continue_;
  std::string out_data_;
  bool chunked_ = false;
  bool keep_alive_ = false;
  bool writing_ = false;
  bool watching_ = false;
  bool idle_armed_ = false;

  bool close_after_write_ = false;
  bool linger_ = false;
  absl::Time linger_until_;
  std::unique_ptr<char[]> linger_buffer_;
  bool stopping_ = false;
  absl::Status stop_status_;
  bool closing_ = false;
  bool closed_ = false;
};

}  // namespace

void StartSession(tcp::socket socket, std::shared_ptr<ListenerState> listener) {
  const ListenerState::Slot slot = listener->TakeSlot();
  std::string peer = PeerOf(socket);
  if (slot == ListenerState::Slot::kDrop) {
    spdlog::warn(
        "http {} {}: closed at once: too many connections, even to "
        "refuse politely",
        listener->name(), peer);
    error_code ignored;
    socket.close(ignored);
    return;
  }
  if (net::ssl::context* tls = listener->tls()) {
    std::make_shared<Session<TlsStream>>(
        TlsStream(beast::tcp_stream(std::move(socket)), *tls),
        std::move(listener), slot, std::move(peer))
        ->Run();
  } else {
    std::make_shared<Session<PlainStream>>(PlainStream(std::move(socket)),
                                           std::move(listener), slot,
                                           std::move(peer))
        ->Run();
  }
}

}  // namespace iblip::server::http
