#include "server/http/access_log.h"

#include "absl/strings/escaping.h"
#include "spdlog/spdlog.h"

namespace iblip::server::http {

void LogAccess(const AccessRecord& record) {
  spdlog::info(
      "http {} {} \"{} {}\" {} {} B {:.1f} ms{}{}", record.listener,
      record.peer, absl::CHexEscape(record.method),
      absl::CHexEscape(record.target),
      record.status == 0 ? std::string("-") : std::to_string(record.status),
      record.bytes_out, absl::ToDoubleMilliseconds(record.duration),
      record.note.empty() ? "" : ": ", record.note);
}

}  // namespace iblip::server::http
