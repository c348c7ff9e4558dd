#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace iblip::server::http {

// One request as the access log and the metrics see it: answered, refused,
// or abandoned (a timeout, a client that left).
struct AccessRecord {
  std::string listener;  // "api", "metrics"
  std::string peer;      // "127.0.0.1:51234"
  std::string method;    // as sent (at most ~200 bytes); "-" before any
  std::string target;    // as sent (at most ~200 bytes); "-" before any
  std::string route;     // the matched route's pattern, or "-"
  int status = 0;        // 0: closed without an answer
  uint64_t bytes_out = 0;
  absl::Duration duration;
  std::string note;  // why it ended without an answer, and other oddities
};

// One info line on the server log: listener, peer, request line (escaped),
// status, bytes, milliseconds and the note.
void LogAccess(const AccessRecord& record);

}  // namespace iblip::server::http
