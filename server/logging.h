#pragma once

#include <string>

#include "absl/status/status.h"

namespace iblip::server {

// Points spdlog's default logger at stderr with `level` (trace ... off) and
// `format`: "text" for people, or "json" for log collectors (one object per
// line: time, level, logger, message; the message JSON-escaped).
absl::Status ConfigureLogging(const std::string& level,
                              const std::string& format);

}  // namespace iblip::server
