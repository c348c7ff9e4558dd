// Fuzz target: a GenerateRequest as it arrives off the wire, through parsing
// (with the diagnosis of malformed messages) and every validation rule.
// Errors are INVALID_ARGUMENT with a message; an accepted request must
// respect the limits.

#include <cstddef>
#include <cstdint>

#include "config/config_loader.h"
#include "server/pipeline/request_validator.h"
#include "server/grpc/wire_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto request = iblip::server::ParseGenerateRequest(
      {reinterpret_cast<const char*>(data), size});
  if (!request.ok()) {
    if (request.status().code() != absl::StatusCode::kInvalidArgument ||
        request.status().message().empty()) {
      __builtin_trap();
    }
    return 0;
  }
  // The config's defaults against a Vicuna-shaped model.
  static const iblip::server::ServingLimits limits = [] {
    auto config = iblip::config::WithDefaults(iblip::config::ServerConfig());
    if (!config.ok()) __builtin_trap();
    return iblip::server::ServingLimitsFrom(config->limits(), {2048, 32, 32000});
  }();
  auto validated = iblip::server::ValidateGenerateRequest(*request, limits, 7);
  if (!validated.ok()) {
    if (validated.status().message().empty())
      __builtin_trap();  // errors name the field
    return 0;
  }
  const auto& settings = validated->settings;
  if (settings.max_new_tokens < 1 ||
      settings.max_new_tokens > static_cast<int>(limits.max_new_tokens) ||
      settings.num_return_sequences < 1 ||
      settings.num_return_sequences >
          static_cast<int>(limits.max_return_sequences)) {
    __builtin_trap();
  }
  (void)iblip::server::ValidateTokenBudget(size % 4096, 32, settings, limits);
  return 0;
}
