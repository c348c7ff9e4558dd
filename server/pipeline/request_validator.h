#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "iblip/v1/iblip.pb.h"
#include "server/engine/generation_request.h"

namespace iblip::server {

// Request limits in force: the config's, resolved against the loaded model.
struct ServingLimits {
  uint32_t max_images_per_request = 1;
  uint64_t max_image_bytes = 20ull << 20;
  uint64_t max_image_pixels = 50'000'000;
  uint32_t max_prompt_bytes = 16 * 1024;
  uint32_t max_prompt_tokens = 0;
  uint32_t max_new_tokens = 1024;
  uint32_t max_context_tokens = 0;
  uint32_t max_num_beams = 8;
  uint32_t max_return_sequences = 8;
  uint32_t max_stop_sequences = 8;
  uint32_t max_stop_sequence_bytes = 128;
  uint64_t max_request_bytes = 21ull << 20;
  uint32_t lm_vocab_size = 0;
  uint32_t default_max_new_tokens = 64;
  // Longest a request may run from arrival; zero: only the client's deadline.
  absl::Duration max_request_time = absl::ZeroDuration();
};

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

// Checks that count tokens: prompt length and the context budget.
absl::Status ValidateTokenBudget(size_t prompt_tokens, int image_tokens,
                                 const GenerationSettings& settings,
                                 const ServingLimits& limits);

// True if `text` is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF).
bool IsValidUtf8(absl::string_view text);

}  // namespace iblip::server
