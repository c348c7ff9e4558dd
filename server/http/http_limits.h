#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace iblip::server::http {

// What one connection may cost the server (config: http.*).
struct HttpLimits {
  // Request line and header fields together; beyond: 431 (414 when the
  // request line alone does not fit).
  uint32_t max_header_bytes = 16 * 1024;
  // The request target (path and query); beyond: 414.
  uint32_t max_url_bytes = 8 * 1024;
  // The body (Content-Length, or chunks as they arrive); beyond: 413,
  // before the body is read when Content-Length says so.
  uint64_t max_body_bytes = 1 << 20;
  // Waiting for a request's first byte on an open connection.
  absl::Duration idle_timeout = absl::Seconds(30);
  // From a request's first byte to the end of its header (and the TLS
  // handshake).
  absl::Duration header_timeout = absl::Seconds(10);
  // Reading the whole body.
  absl::Duration body_timeout = absl::Seconds(60);
  // Each write to the client: a response, or one piece of an event stream.
  absl::Duration write_timeout = absl::Seconds(30);
};

}  // namespace iblip::server::http
