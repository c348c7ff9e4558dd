#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "iblip/v1/iblip.pb.h"
#include "server/engine/generation_request.h"
#include "server/serving_limits.h"

namespace iblip::server {

// The values unset GenerationParameters fields take.
v1::GenerationParameters DefaultParameters(const ServingLimits& limits);

struct ValidatedRequest {
  std::string request_id;  // empty: the server assigns one
  Priority priority = Priority::kNormal;
  GenerationSettings settings;
};

// Checks every field that can be checked without decoding the image or
// tokenizing the prompt. INVALID_ARGUMENT messages start with the field path
// ("parameters.top_p: ..."); UNIMPLEMENTED for valid requests this server
// version cannot serve yet. `random_seed` is used when the request has none.
absl::StatusOr<ValidatedRequest> ValidateGenerateRequest(
    const v1::GenerateRequest& request, const ServingLimits& limits,
    uint64_t random_seed);

// Checks an Image.sha256 reference: 64 lowercase hex characters.
// INVALID_ARGUMENT names `field`.
absl::Status CheckImageReference(const std::string& sha256,
                                 const std::string& field);

// Checks that count tokens: prompt length and the context budget.
absl::Status ValidateTokenBudget(size_t prompt_tokens, int image_tokens,
                                 const GenerationSettings& settings,
                                 const ServingLimits& limits);

// True if `text` is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF).
bool IsValidUtf8(absl::string_view text);

}  // namespace iblip::server
