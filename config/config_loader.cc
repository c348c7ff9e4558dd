#include "config/config_loader.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/device.h"
#include "config/config_options.h"

namespace iblip::config {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

absl::Status OutOfRange(absl::string_view field, uint64_t value,
                        absl::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("config: ", field, " ", rule, ", got ", value));
}

std::string Where(absl::string_view source, const YAML::Node& node) {
  return absl::StrCat(source, ":", node.Mark().line + 1);
}

bool IsSection(absl::string_view path) {
  for (const ConfigOption& option : AllConfigOptions()) {
    if (absl::StartsWith(option.path, absl::StrCat(path, "."))) return true;
  }
  return false;
}

absl::Status ReadMapping(const YAML::Node& mapping, const std::string& prefix,
                         absl::string_view source, ServerConfig& config) {
  for (const auto& entry : mapping) {
    const std::string path = prefix + entry.first.as<std::string>();
    const YAML::Node& value = entry.second;
    const std::string where = Where(source, entry.first);
    if (IsSection(path)) {
      if (value.IsNull()) continue;  // an empty section
      if (!value.IsMap()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", path, " must be a mapping of options"));
      }
      absl::Status status = ReadMapping(value, path + ".", source, config);
      if (!status.ok()) return status;
      continue;
    }
    const ConfigOption* option = FindOptionByPath(path);
    if (option == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unknown option '", path, "'"));
    }
    if (!value.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", path, " must be a single ", option->type, " value"));
    }
    absl::Status status = SetOption(config, *option, value.Scalar(), where);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view yaml,
                                               absl::string_view source) {
  ServerConfig config;
  try {
    const YAML::Node root = YAML::Load(std::string(yaml));
    if (root.IsNull()) return config;  // an empty file: all defaults
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": the top level must be a mapping of options"));
    }
    absl::Status status = ReadMapping(root, "", source, config);
    if (!status.ok()) return status;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("config file not found: ", path));
  }
  std::stringstream text;
  text << file.rdbuf();
  return ParseServerConfig(text.str(), path);
}

absl::StatusOr<ServerConfig> WithDefaults(ServerConfig config) {
  for (const ConfigOption& option : AllConfigOptions()) {
    if (option.default_value.empty() || IsOptionSet(config, option)) continue;
    absl::Status status =
        SetOption(config, option, option.default_value, "default");
    if (!status.ok()) return status;
  }
  if (config.port() > 65535)
    return OutOfRange("port", config.port(), "must be <= 65535");
  if (config.metrics_port() > 65535) {
    return OutOfRange("metrics_port", config.metrics_port(),
                      "must be <= 65535");
  }

  RuntimeConfig& runtime = *config.mutable_runtime();
  if (runtime.preprocess_threads() == 0) {
    return OutOfRange("runtime.preprocess_threads", 0, "must be >= 1");
  }
  if (runtime.heap_retain_mib() > 2047) {
    return OutOfRange("runtime.heap_retain_mib", runtime.heap_retain_mib(),
                      "must be <= 2047");
  }

  LimitsConfig& limits = *config.mutable_limits();
  if (!limits.has_max_request_bytes()) {
    limits.set_max_request_bytes(limits.max_image_bytes() + kMiB);
  }
  if (limits.max_new_tokens() == 0) {
    return OutOfRange("limits.max_new_tokens", 0, "must be >= 1");
  }
  if (limits.default_max_new_tokens() == 0 ||
      limits.default_max_new_tokens() > limits.max_new_tokens()) {
    return OutOfRange("limits.default_max_new_tokens",
                      limits.default_max_new_tokens(),
                      "must be in [1, limits.max_new_tokens]");
  }
  if (limits.max_request_bytes() > 2'000'000'000ULL) {
    return OutOfRange("limits.max_request_bytes", limits.max_request_bytes(),
                      "must be <= 2e9 (gRPC's message size is an int)");
  }

  // One spelling per device from here on ("cuda" -> "cuda:0").
  absl::StatusOr<DeviceSpec> device = ParseDevice(config.runtime().device());
  if (!device.ok()) return device.status();
  config.mutable_runtime()->set_device(device->ToString());

  SchedulerConfig& scheduler = *config.mutable_scheduler();
  if (scheduler.max_running_sequences() == 0) {
    return OutOfRange("scheduler.max_running_sequences", 0, "must be >= 1");
  }
  if (scheduler.kv_cache_mib() == 0)
    return OutOfRange("scheduler.kv_cache_mib", 0, "must be >= 1");
  if (scheduler.max_queue_size() == 0) {
    return OutOfRange("scheduler.max_queue_size", 0, "must be >= 1");
  }
  if (scheduler.vision_max_batch_size() == 0) {
    return OutOfRange("scheduler.vision_max_batch_size", 0, "must be >= 1");
  }
  if (scheduler.max_step_stretch_percent() < 100 ||
      scheduler.max_step_stretch_percent() > 10000) {
    return OutOfRange("scheduler.max_step_stretch_percent",
                      scheduler.max_step_stretch_percent(),
                      "must be in [100, 10000]");
  }

  if (config.http().history() != "latest" &&
      config.http().history() != "transcript") {
    return absl::InvalidArgumentError(
        absl::StrCat("config: http.history must be latest or transcript, got '",
                     config.http().history(), "'"));
  }
  HttpConfig& http = *config.mutable_http();
  if (http.port() > 65535)
    return OutOfRange("http.port", http.port(), "must be <= 65535");
  if (!http.has_max_body_bytes()) {
    // A base64 data: URL of the largest image, plus room for the rest.
    http.set_max_body_bytes((limits.max_image_bytes() + 2) / 3 * 4 + kMiB);
  }
  for (const auto& [name, value] :
       {std::pair<const char*, uint32_t>{"http.io_threads", http.io_threads()},
        {"http.handler_threads", http.handler_threads()},
        {"http.max_connections", http.max_connections()},
        {"http.idle_timeout_s", http.idle_timeout_s()},
        {"http.header_timeout_s", http.header_timeout_s()},
        {"http.body_timeout_s", http.body_timeout_s()},
        {"http.write_timeout_s", http.write_timeout_s()}}) {
    if (value == 0) return OutOfRange(name, 0, "must be >= 1");
  }
  if (http.max_header_bytes() < 1024)
    return OutOfRange("http.max_header_bytes", http.max_header_bytes(),
                      "must be >= 1024");
  if (http.max_url_bytes() < 64 ||
      http.max_url_bytes() > http.max_header_bytes()) {
    return OutOfRange("http.max_url_bytes", http.max_url_bytes(),
                      "must be in [64, http.max_header_bytes]");
  }
  // A chat body nests 6 deep: body, messages, message, content, part, url.
  if (http.max_json_depth() < 8)
    return OutOfRange("http.max_json_depth", http.max_json_depth(),
                      "must be >= 8");
  if (http.max_json_elements() < 16)
    return OutOfRange("http.max_json_elements", http.max_json_elements(),
                      "must be >= 16");

  const LoggingConfig& logging = config.logging();
  if (logging.level() != "trace" && logging.level() != "debug" &&
      logging.level() != "info" && logging.level() != "warn" &&
      logging.level() != "error" && logging.level() != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: logging.level must be trace, debug, info, warn, error or "
        "off, got '",
        logging.level(), "'"));
  }
  if (logging.format() != "text" && logging.format() != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("config: logging.format must be text or json, got '",
                     logging.format(), "'"));
  }
  return config;
}

}  // namespace iblip::config
