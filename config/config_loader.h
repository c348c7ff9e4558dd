#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "config/server_config.pb.h"

namespace iblip::config {

// Parses a text-format ServerConfig. Unknown fields are errors, so a typo in
// a field name fails loudly instead of being ignored.
absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view text);

// Reads and parses the file at `path`.
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);

// Returns `config` with every unset field set to its documented default, or
// INVALID_ARGUMENT naming the first field whose value is out of range.
// Model-dependent limits (max_prompt_tokens) stay unset: the server resolves
// them against the loaded model.
absl::StatusOr<ServerConfig> WithDefaults(ServerConfig config);

}  // namespace iblip::config
