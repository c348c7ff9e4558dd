#pragma once

#include <cstdint>

#include "absl/time/time.h"
#include "config/server_config.pb.h"

namespace iblip::server {

// Request limits in force: the config's, resolved against the loaded model.
// No defaults of its own: every value comes from the config, whose schema
// (config/server_config.proto) is the one place defaults live. Zero here
// means "not built yet", never a limit.
struct ServingLimits {
  uint32_t max_images_per_request = 0;
  uint64_t max_image_bytes = 0;
  uint64_t max_image_pixels = 0;
  uint32_t max_prompt_bytes = 0;
  uint32_t max_prompt_tokens = 0;
  uint32_t max_new_tokens = 0;
  uint32_t max_context_tokens = 0;
  uint32_t max_num_beams = 0;
  uint32_t max_return_sequences = 0;
  uint32_t max_stop_sequences = 0;
  uint32_t max_stop_sequence_bytes = 0;
  uint64_t max_request_bytes = 0;
  uint32_t lm_vocab_size = 0;
  uint32_t default_max_new_tokens = 0;
  // Longest a request may run from arrival; zero: only the client's deadline.
  absl::Duration max_request_time = absl::ZeroDuration();
};

// What the loaded model bounds.
struct ModelBounds {
  uint32_t max_context_tokens = 0;
  uint32_t num_query_tokens = 0;
  uint32_t lm_vocab_size = 0;
};

// `limits` (defaults already applied: config::WithDefaults) within what the
// model allows: the prompt and the new tokens fit the context after the
// image's query tokens.
ServingLimits ServingLimitsFrom(const config::LimitsConfig& limits,
                                const ModelBounds& model);

}  // namespace iblip::server
