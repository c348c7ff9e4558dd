#pragma once

// What route handlers see and answer: plain data, no Beast or socket types,
// so handlers are easy to write and to test without a network.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iblip::server::http {

// A request whose header passed the listener's checks (limits, route,
// method, API key) and whose body was read whole.
struct HttpRequest {
  std::string method;  // "GET", "HEAD", "POST", ...
  std::string path;    // the target up to '?'
  std::string query;   // after '?', undecoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first header named `name` (case-insensitive), or null.
  const std::string* Header(absl::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra ones
};

HttpResponse JsonResponse(int status, std::string body);
// OpenAI's error shape with the status code's HTTP status (or `http_status`).
HttpResponse ErrorResponse(const absl::Status& status, int http_status = 0);

// One step of a reply that is not ready at once: a whole response later, or
// a stream (a header, then data, then an end).
struct ReplyPart {
  enum class Kind {
    kNotYet,       // nothing to send now; the waker will be called
    kResponse,     // `response` is the whole answer
    kStreamStart,  // `response` holds the status and headers of a stream
    kStreamData,   // `data` continues the stream
    kStreamEnd,    // `data` (maybe empty) ends the stream
  };
  Kind kind = Kind::kNotYet;
  HttpResponse response;
  std::string data;
};

// A reply produced over time (a generation). The connection pulls parts
// with Next() whenever it can write, so a slow client never makes the reply
// buffer without bound: the producer decides how to coalesce.
class PendingReply {
 public:
  virtual ~PendingReply() = default;
  // `wake` (thread-safe, non-blocking) is called whenever Next() may have
  // something new. SetWaker(nullptr): no call after it returns.
  virtual void SetWaker(std::function<void()> wake) = 0;
  // Called on the connection's strand only.
  virtual ReplyPart Next() = 0;
  // Stops the work behind the reply: the client left, or the server stops.
  // The parts still to come report `status` (an error response, or an error
  // event that ends the stream). Idempotent; thread-safe.
  virtual void Cancel(const absl::Status& status) = 0;
};

// What a handler returns: a response now, or a PendingReply.
struct Reply {
  Reply(HttpResponse r) : response(std::move(r)) {}  // NOLINT: implicit
  Reply(std::shared_ptr<PendingReply> p) : pending(std::move(p)) {}  // NOLINT
  HttpResponse response;  // when `pending` is null
  std::shared_ptr<PendingReply> pending;
};

// Runs on the listener's handler threads (never on its I/O threads), so it
// may take CPU time (JSON parsing). Exceptions it lets escape become 500.
using Handler = std::function<Reply(HttpRequest& request)>;

}  // namespace iblip::server::http
