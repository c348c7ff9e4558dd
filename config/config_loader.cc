#include "config/config_loader.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace iblip::config {
namespace {

// Collects the parser's messages so the error names line and column.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) {
      first_ = absl::StrCat("line ", line + 1, ":", column + 1, ": ", message);
    }
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

constexpr uint64_t kMiB = 1024 * 1024;

absl::Status OutOfRange(absl::string_view field, uint64_t value,
                        absl::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("config: ", field, " ", rule, ", got ", value));
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view text) {
  ServerConfig config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", errors.first()));
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
  auto config = ParseServerConfig(text.str());
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

absl::StatusOr<ServerConfig> WithDefaults(ServerConfig config) {
  if (config.host().empty()) config.set_host("0.0.0.0");
  if (!config.has_port()) config.set_port(50051);
  if (!config.has_metrics_port()) config.set_metrics_port(9090);
  if (!config.has_metrics_enabled()) config.set_metrics_enabled(true);
  if (!config.has_drain_timeout_s()) config.set_drain_timeout_s(30);
  if (config.port() > 65535)
    return OutOfRange("port", config.port(), "must be <= 65535");
  if (config.metrics_port() > 65535) {
    return OutOfRange("metrics_port", config.metrics_port(),
                      "must be <= 65535");
  }

  RuntimeConfig& runtime = *config.mutable_runtime();
  if (runtime.device().empty()) runtime.set_device("cpu");
  if (!runtime.has_num_threads()) runtime.set_num_threads(0);
  if (!runtime.has_preprocess_threads()) runtime.set_preprocess_threads(2);
  if (runtime.preprocess_threads() == 0) {
    return OutOfRange("runtime.preprocess_threads", 0, "must be >= 1");
  }

  LimitsConfig& limits = *config.mutable_limits();
  if (!limits.has_max_image_bytes()) limits.set_max_image_bytes(20 * kMiB);
  if (!limits.has_max_image_pixels()) limits.set_max_image_pixels(50'000'000);
  if (!limits.has_max_prompt_bytes()) limits.set_max_prompt_bytes(16 * 1024);
  if (!limits.has_max_new_tokens()) limits.set_max_new_tokens(1024);
  if (!limits.has_max_num_beams()) limits.set_max_num_beams(8);
  if (!limits.has_max_return_sequences()) limits.set_max_return_sequences(8);
  if (!limits.has_max_stop_sequences()) limits.set_max_stop_sequences(8);
  if (!limits.has_max_stop_sequence_bytes()) {
    limits.set_max_stop_sequence_bytes(128);
  }
  if (!limits.has_max_request_bytes()) {
    limits.set_max_request_bytes(limits.max_image_bytes() + kMiB);
  }
  if (!limits.has_default_max_new_tokens())
    limits.set_default_max_new_tokens(64);
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

  SchedulerConfig& scheduler = *config.mutable_scheduler();
  if (!scheduler.has_max_queue_size()) scheduler.set_max_queue_size(256);
  if (!scheduler.has_max_running_sequences())
    scheduler.set_max_running_sequences(32);
  if (!scheduler.has_kv_cache_mib()) scheduler.set_kv_cache_mib(2048);
  if (!scheduler.has_prefill_token_budget())
    scheduler.set_prefill_token_budget(2048);
  if (scheduler.max_running_sequences() == 0) {
    return OutOfRange("scheduler.max_running_sequences", 0, "must be >= 1");
  }
  if (scheduler.kv_cache_mib() == 0)
    return OutOfRange("scheduler.kv_cache_mib", 0, "must be >= 1");
  if (scheduler.max_queue_size() == 0) {
    return OutOfRange("scheduler.max_queue_size", 0, "must be >= 1");
  }
  if (!scheduler.has_vision_max_batch_size())
    scheduler.set_vision_max_batch_size(8);
  if (!scheduler.has_vision_max_queue_delay_us())
    scheduler.set_vision_max_queue_delay_us(0);
  if (scheduler.vision_max_batch_size() == 0) {
    return OutOfRange("scheduler.vision_max_batch_size", 0, "must be >= 1");
  }

  CacheConfig& cache = *config.mutable_cache();
  if (!cache.has_vision_cache_mib()) cache.set_vision_cache_mib(256);
  if (!cache.has_qformer_cache_mib()) cache.set_qformer_cache_mib(64);
  return config;
}

}  // namespace iblip::config
