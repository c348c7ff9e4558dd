// Fuzz target: a GenerateRequest as it arrives off the wire, through parsing
// (with the diagnosis of malformed messages) and every validation rule.
// Errors are INVALID_ARGUMENT with a message; an accepted request must
// respect the limits.

#include <cstddef>
#include <cstdint>

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
  iblip::server::ServingLimits limits;
  limits.lm_vocab_size = 32000;
  limits.max_context_tokens = 2048;
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
