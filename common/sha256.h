#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace iblip {

// SHA-256 of `bytes` as 64 lowercase hex characters: how images are named
// by content (the feature cache's key, Image.sha256 references).
std::string Sha256Hex(absl::string_view bytes);

}  // namespace iblip
