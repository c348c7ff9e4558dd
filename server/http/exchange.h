#pragma once

// One request's way through a connection, as steps that the network session
// (session.cc) and the in-memory ServeRawRequests (the fuzz target, unit
// tests) share: configure Beast's parser, judge the header, run the handler
// behind a catch-all, turn the answer into Beast messages.

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/http/http_limits.h"
#include "server/http/http_message.h"
#include "server/http/router.h"

namespace iblip::server::http {

using RequestParser =
    boost::beast::http::request_parser<boost::beast::http::string_body>;
using BeastResponse =
    boost::beast::http::response<boost::beast::http::string_body>;
using BeastStreamHead =
    boost::beast::http::response<boost::beast::http::empty_body>;

// What the connection keeps about the request it is answering (the request
// itself goes to the handler), for the response and the access log.
struct Exchange {
  absl::Time start;
  std::string method;       // as sent, at most ~200 bytes
  std::string target;       // as sent, at most ~200 bytes
  std::string route = "-";  // the matched route's pattern: the metrics label
  unsigned version = 11;
  bool keep_alive = false;
  bool head = false;         // HEAD: the header only
  std::string allow_origin;  // Access-Control-Allow-Origin to send, or ""
  int status = 0;            // what was answered (0: nothing)
  uint64_t bytes_out = 0;
  std::string note;  // why it ended without an answer, or other oddities
};

void ConfigureParser(RequestParser& parser, const HttpLimits& limits);

// The answer to a request Beast could not read: 431 header too large (414
// when the request line alone was), 413 body too large, 400 malformed.
HttpResponse UnreadableRequestResponse(const boost::system::error_code& error,
                                       const RequestParser& parser,
                                       const HttpLimits& limits);

// Copies the request line into `exchange` (for the log), as far as the
// parser got.
void NoteRequestLine(const RequestParser& parser, Exchange& exchange);

struct Admission {
  const Router::Route* route = nullptr;  // serve it: read the body, then run
  std::optional<HttpResponse> answer;    // else answer this at once
  bool expect_continue = false;          // send "100 Continue" before the body
};

// Judges a request from its header (fills `exchange`): URL length, Expect,
// OPTIONS and CORS preflight, API key, route and method. Nothing here reads
// the body, so a refused client never gets to send it.
Admission AdmitRequest(const RequestParser& parser, const Router& router,
                       const HttpLimits& limits, Exchange& exchange);

// The parsed request, moved out of the parser.
HttpRequest TakeRequest(RequestParser& parser);

// Runs the route's handler; an exception becomes a 500 JSON error.
Reply RunHandler(const Router::Route& route, HttpRequest& request) noexcept;

// `response` as a Beast message answering `exchange` (Server, CORS,
// keep-alive; for HEAD the length without the body).
BeastResponse ToBeastResponse(HttpResponse response, const Exchange& exchange,
                              bool keep_alive);
// The header of an event stream: chunked on HTTP/1.1; HTTP/1.0 clients get
// the data until the connection closes.
BeastStreamHead ToStreamHead(const HttpResponse& head, const Exchange& exchange,
                             bool keep_alive);
BeastStreamHead ContinueResponse();

// Serves one connection's bytes (any number of pipelined requests) exactly
// as a network session decides, without sockets or timeouts: a request cut
// short ends the input, a pending reply is awaited (up to `reply_timeout`,
// then cancelled). Returns every byte the session would write.
std::string ServeRawRequests(absl::string_view bytes, const Router& router,
                             const HttpLimits& limits,
                             absl::Duration reply_timeout = absl::Seconds(5));

}  // namespace iblip::server::http
