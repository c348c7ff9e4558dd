#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "config/server_config.pb.h"

namespace iblip::config {

// Parses a YAML ServerConfig (nested mappings of the schema's fields; see
// config/server.yaml). Unknown options, wrong types and non-mapping
// sections are errors naming `source`, the line and the option, so a typo
// fails loudly instead of being ignored.
absl::StatusOr<ServerConfig> ParseServerConfig(
    absl::string_view yaml, absl::string_view source = "config");

// Reads and parses the YAML file at `path`.
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);

// Returns `config` with every unset option set to its documented default, or
// INVALID_ARGUMENT naming the first option whose value is out of range.
// Model-dependent limits (max_prompt_tokens) stay unset: the server resolves
// them against the loaded model.
absl::StatusOr<ServerConfig> WithDefaults(ServerConfig config);

}  // namespace iblip::config
