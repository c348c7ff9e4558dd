#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "config/server_config.pb.h"

namespace iblip::config {

// One option of ServerConfig: a scalar field, reached through nested
// messages, with the documentation and default its (doc) and
// (default_value) field options give. Read from the schema by reflection,
// so the YAML loader, the command-line flags, --help and WithDefaults can
// never disagree about which options exist.
struct ConfigOption {
  std::string path;           // "scheduler.max_queue_size"
  std::string flag;           // "scheduler.max-queue-size" (--flag)
  std::string type;           // "uint32", "uint64", "bool", "string"
  std::string doc;            // with its unit
  std::string default_value;  // "" when it depends on the model
  // The fields from ServerConfig down to the scalar.
  std::vector<const google::protobuf::FieldDescriptor*> fields;
};

// Every option, in schema order.
const std::vector<ConfigOption>& AllConfigOptions();
const ConfigOption* FindOptionByPath(absl::string_view path);
const ConfigOption* FindOptionByFlag(absl::string_view flag);

// Parses `value` for the option's type and sets it. INVALID_ARGUMENT names
// `source` (a file:line or a --flag) and the expected type.
absl::Status SetOption(ServerConfig& config, const ConfigOption& option,
                       absl::string_view value, absl::string_view source);
bool IsOptionSet(const ServerConfig& config, const ConfigOption& option);
// The option's value as text (for logging the effective configuration).
std::string OptionValue(const ServerConfig& config, const ConfigOption& option);

}  // namespace iblip::config
