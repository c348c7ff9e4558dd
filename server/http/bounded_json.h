#pragma once

// JSON from clients, with bounds checked before any document is built, and
// JSON text for clients that never throws.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace iblip::server::http {

struct JsonLimits {
  // Nesting of objects and arrays (the top-level value is depth 1).
  uint32_t max_depth = 32;
  // Values of any kind (objects, arrays, strings, numbers, ...).
  uint32_t max_elements = 10000;
};

// Parses `text` into a document. A first pass over nlohmann-json's SAX
// interface stops at the first value beyond `limits`, so a body of tiny
// nested or repeated values costs no memory beyond the body itself; only a
// body within them is built into a document. INVALID_ARGUMENT names `field`
// and the byte offset (the client's bytes are never echoed).
absl::StatusOr<nlohmann::json> ParseBoundedJson(absl::string_view text,
                                                const JsonLimits& limits,
                                                absl::string_view field);

// `value` serialized compactly; invalid UTF-8 in strings becomes U+FFFD
// instead of throwing (a client's bytes may be anything).
std::string DumpJson(const nlohmann::json& value);

// A short description of a client's value for an error message: scalars as
// JSON (at most ~200 bytes), containers by kind and size (never a dump of
// their contents, which could be large or deep).
std::string DescribeJson(const nlohmann::json& value);

}  // namespace iblip::server::http
