#include "server/http/exchange.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/write.hpp>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/http/http_errors.h"
#include "spdlog/spdlog.h"

namespace iblip::server::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;

absl::string_view View(beast::string_view text) {
  return absl::string_view(text.data(), text.size());
}

absl::string_view Field(const bhttp::request<bhttp::string_body>& request,
                        bhttp::field field) {
  auto it = request.find(field);
  return it == request.end() ? absl::string_view() : View(it->value());
}

HttpResponse NoSuchEndpoint(absl::string_view path) {
  return ErrorResponse(absl::NotFoundError(
      absl::StrCat("path: no such endpoint: ", ClientText(path))));
}

HttpResponse WithHeader(HttpResponse response, std::string name,
                        std::string value) {
  response.headers.emplace_back(std::move(name), std::move(value));
  return response;
}

void SetCommonHeaders(bhttp::header<false>& header,
                      const HttpResponse& response, const Exchange& exchange) {
  header.result(static_cast<unsigned>(response.status));
  header.version(exchange.version);
  header.set(bhttp::field::server, "iblip-server");
  if (!response.content_type.empty())
    header.set(bhttp::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) header.set(name, value);
  if (!exchange.allow_origin.empty()) {
    header.set(bhttp::field::access_control_allow_origin,
               exchange.allow_origin);
    header.set(bhttp::field::vary, "Origin");
  }
}

template <class Message>
std::string Serialize(const Message& message) {
  std::ostringstream out;
  out << message;
  return out.str();
}

// Drives a pending reply to its end, appending what a session would write.
void DrivePendingReply(PendingReply& reply, const Exchange& exchange,
                       absl::Duration timeout, std::string& out) {
  std::mutex mutex;
  std::condition_variable woken;
  bool wake = false;
  reply.SetWaker([&] {
    std::lock_guard<std::mutex> lock(mutex);
    wake = true;
    woken.notify_one();
  });
  absl::Time deadline = absl::Now() + timeout;
  bool cancelled = false;
  const bool chunked = exchange.version >= 11;
  for (bool done = false; !done;) {
    ReplyPart part = reply.Next();
    switch (part.kind) {
      case ReplyPart::Kind::kNotYet: {
        std::unique_lock<std::mutex> lock(mutex);
        if (!woken.wait_for(lock,
                            absl::ToChronoNanoseconds(deadline - absl::Now()),
                            [&] { return wake; })) {
          if (cancelled) {  // not even cancelling ended it: give up
            done = true;
            break;
          }
          lock.unlock();
          reply.Cancel(absl::DeadlineExceededError("the reply took too long"));
          cancelled = true;
          deadline = absl::Now() + timeout;
          break;
        }
        wake = false;
        break;
      }
      case ReplyPart::Kind::kResponse:
        out += Serialize(ToBeastResponse(std::move(part.response), exchange,
                                         exchange.keep_alive));
        done = true;
        break;
      case ReplyPart::Kind::kStreamStart:
        out += Serialize(
            ToStreamHead(part.response, exchange, exchange.keep_alive).base());
        break;
      case ReplyPart::Kind::kStreamData:
      case ReplyPart::Kind::kStreamEnd:
        if (!part.data.empty()) {
          out += chunked ? beast::buffers_to_string(
                               bhttp::make_chunk(net::buffer(part.data)))
                         : part.data;
        }
        if (part.kind == ReplyPart::Kind::kStreamEnd) {
          if (chunked)
            out += beast::buffers_to_string(bhttp::make_chunk_last());
          done = true;
        }
        break;
    }
  }
  reply.SetWaker(nullptr);
}

}  // namespace

void ConfigureParser(RequestParser& parser, const HttpLimits& limits) {
  parser.header_limit(limits.max_header_bytes);
  parser.body_limit(limits.max_body_bytes);
}

HttpResponse UnreadableRequestResponse(const boost::system::error_code& error,
                                       const RequestParser& parser,
                                       const HttpLimits& limits) {
  if (error == bhttp::error::header_limit) {
    if (parser.get().target().empty()) {
      return ErrorResponse(
          absl::InvalidArgumentError(absl::StrCat(
              "url: the request line is longer than ", limits.max_header_bytes,
              " bytes (http.max_header_bytes)")),
          414);
    }
    return ErrorResponse(absl::InvalidArgumentError(absl::StrCat(
                             "headers: larger than ", limits.max_header_bytes,
                             " bytes (http.max_header_bytes)")),
                         431);
  }
  if (error == bhttp::error::body_limit) {
    return ErrorResponse(absl::InvalidArgumentError(absl::StrCat(
                             "body: larger than ", limits.max_body_bytes,
                             " bytes (http.max_body_bytes)")),
                         413);
  }
  return ErrorResponse(absl::InvalidArgumentError(absl::StrCat(
      "request: not a valid HTTP/1.1 request (", error.message(), ")")));
}

void NoteRequestLine(const RequestParser& parser, Exchange& exchange) {
  const auto& request = parser.get();
  if (request.target().empty()) return;  // the line was not read whole
  exchange.method = ClientText(View(request.method_string()));
  exchange.target = ClientText(View(request.target()));
}

Admission AdmitRequest(const RequestParser& parser, const Router& router,
                       const HttpLimits& limits, Exchange& exchange) {
  const auto& request = parser.get();
  const absl::string_view target = View(request.target());
  const absl::string_view method = View(request.method_string());
  NoteRequestLine(parser, exchange);
  exchange.version = request.version();
  exchange.keep_alive = request.keep_alive();
  exchange.head = request.method() == bhttp::verb::head;
  exchange.allow_origin =
      router.AllowedOrigin(Field(request, bhttp::field::origin));

  Admission admission;
  auto answer = [&admission](HttpResponse response) {
    admission.answer = std::move(response);
    return admission;
  };
  if (target.size() > limits.max_url_bytes) {
    return answer(ErrorResponse(absl::InvalidArgumentError(absl::StrCat(
                                    "url: longer than ", limits.max_url_bytes,
                                    " bytes (http.max_url_bytes)")),
                                414));
  }
  const absl::string_view path = target.substr(0, target.find('?'));
  const absl::string_view expect = Field(request, bhttp::field::expect);
  if (!expect.empty() && !absl::EqualsIgnoreCase(expect, "100-continue")) {
    return answer(ErrorResponse(
        absl::InvalidArgumentError("expect: only 100-continue is supported"),
        417));
  }
  const Router::Route* route = router.Find(path);
  if (route != nullptr) exchange.route = route->path;

  if (request.method() == bhttp::verb::options) {
    // Preflights carry no credentials: answered before the key check.
    if (route == nullptr) return answer(NoSuchEndpoint(path));
    HttpResponse options;
    options.status = 204;
    options.headers = {{"Allow", route->AllowHeader()}};
    if (!exchange.allow_origin.empty() &&
        !Field(request, bhttp::field::access_control_request_method).empty()) {
      options.headers.insert(
          options.headers.end(),
          {{"Access-Control-Allow-Methods", route->AllowHeader()},
           {"Access-Control-Allow-Headers", "authorization, content-type"},
           {"Access-Control-Max-Age", "600"}});
    }
    return answer(std::move(options));
  }
  // The key before the route: a caller without one learns nothing.
  if (absl::Status key =
          router.CheckKey(path, Field(request, bhttp::field::authorization));
      !key.ok()) {
    return answer(WithHeader(ErrorResponse(key), "WWW-Authenticate", "Bearer"));
  }
  if (route == nullptr) return answer(NoSuchEndpoint(path));
  if (!route->Allows(method)) {
    return answer(WithHeader(
        ErrorResponse(
            absl::InvalidArgumentError(absl::StrCat(
                "method: ", route->path, " takes ", route->AllowHeader())),
            405),
        "Allow", route->AllowHeader()));
  }
  admission.route = route;
  admission.expect_continue = !expect.empty();
  return admission;
}

HttpRequest TakeRequest(RequestParser& parser) {
  bhttp::request<bhttp::string_body> message = parser.release();
  HttpRequest request;
  request.method = std::string(View(message.method_string()));
  const absl::string_view target = View(message.target());
  const size_t question = target.find('?');
  request.path = std::string(target.substr(0, question));
  if (question != absl::string_view::npos)
    request.query = std::string(target.substr(question + 1));
  for (const auto& field : message) {
    request.headers.emplace_back(std::string(View(field.name_string())),
                                 std::string(View(field.value())));
  }
  request.body = std::move(message.body());
  return request;
}

Reply RunHandler(const Router::Route& route, HttpRequest& request) noexcept {
  // The last line of defence: whatever a handler throws on whatever bytes,
  // the client gets a 500 and the process serves on.
  try {
    return route.handler(request);
  } catch (const std::exception& e) {
    spdlog::error("http: handler for {} threw: {}", route.path, e.what());
  } catch (...) {
    spdlog::error("http: handler for {} threw a non-exception", route.path);
  }
  return ErrorResponse(absl::InternalError(
      "internal error while handling the request; the server logged it"));
}

BeastResponse ToBeastResponse(HttpResponse response, const Exchange& exchange,
                              bool keep_alive) {
  BeastResponse message;
  SetCommonHeaders(message.base(), response, exchange);
  message.keep_alive(keep_alive);
  if (exchange.head) {
    message.content_length(response.body.size());
  } else {
    message.body() = std::move(response.body);
    message.prepare_payload();
  }
  return message;
}

BeastStreamHead ToStreamHead(const HttpResponse& head, const Exchange& exchange,
                             bool keep_alive) {
  BeastStreamHead message;
  SetCommonHeaders(message.base(), head, exchange);
  if (exchange.version >= 11) {
    message.chunked(true);
    message.keep_alive(keep_alive);
  } else {
    message.keep_alive(false);
  }
  return message;
}

BeastStreamHead ContinueResponse() {
  return BeastStreamHead(bhttp::status::continue_, 11);
}

std::string ServeRawRequests(absl::string_view bytes, const Router& router,
                             const HttpLimits& limits,
                             absl::Duration reply_timeout) {
  std::string out;
  boost::system::error_code error;
  // Feeds the parser until `done` says so; false: the input ended first (a
  // network session would wait, then time out) or `error` is set.
  auto feed = [&](RequestParser& parser, auto done) {
    while (!done()) {
      // In a body, Beast's put() of no bytes returns 0 without need_more:
      // the end of the input must be checked here, or this spins (found by
      // the fuzzer with a body cut short of its Content-Length).
      if (bytes.empty()) return false;
      const size_t used =
          parser.put(net::buffer(bytes.data(), bytes.size()), error);
      bytes.remove_prefix(used);
      if (error == bhttp::error::need_more) {
        error = {};
        if (used == 0) return false;
        continue;
      }
      if (error || used == 0) return false;
    }
    return true;
  };
  while (!bytes.empty()) {
    RequestParser parser;
    ConfigureParser(parser, limits);
    Exchange exchange;
    exchange.start = absl::Now();
    auto refuse = [&](HttpResponse response) {
      out += Serialize(ToBeastResponse(std::move(response), exchange, false));
    };
    if (!feed(parser, [&] { return parser.is_header_done(); })) {
      if (error) refuse(UnreadableRequestResponse(error, parser, limits));
      return out;
    }
    Admission admission = AdmitRequest(parser, router, limits, exchange);
    if (admission.answer) {
      const bool body_unread = !parser.is_done();
      out += Serialize(ToBeastResponse(std::move(*admission.answer), exchange,
                                       exchange.keep_alive && !body_unread));
      if (body_unread || !exchange.keep_alive) return out;
      continue;
    }
    if (admission.expect_continue && !parser.is_done())
      out += Serialize(ContinueResponse().base());
    if (!feed(parser, [&] { return parser.is_done(); })) {
      if (error) refuse(UnreadableRequestResponse(error, parser, limits));
      return out;
    }
    HttpRequest request = TakeRequest(parser);
    Reply reply = RunHandler(*admission.route, request);
    if (reply.pending) {
      DrivePendingReply(*reply.pending, exchange, reply_timeout, out);
    } else {
      out += Serialize(ToBeastResponse(std::move(reply.response), exchange,
                                       exchange.keep_alive));
    }
    if (!exchange.keep_alive) return out;
  }
  return out;
}

}  // namespace iblip::server::http
