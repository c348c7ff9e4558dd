#include "server/serving_limits.h"

#include <algorithm>

namespace iblip::server {

ServingLimits ServingLimitsFrom(const config::LimitsConfig& c,
                                const ModelBounds& model) {
  ServingLimits limits;
  // The model reads one image per request.
  limits.max_images_per_request = 1;
  limits.max_image_bytes = c.max_image_bytes();
  limits.max_image_pixels = c.max_image_pixels();
  limits.max_prompt_bytes = c.max_prompt_bytes();
  limits.max_context_tokens = model.max_context_tokens;
  // The prompt may use the whole context but one token after the image.
  const uint32_t room =
      model.max_context_tokens > model.num_query_tokens
          ? model.max_context_tokens - model.num_query_tokens - 1
          : 0;
  limits.max_prompt_tokens = c.has_max_prompt_tokens()
                                 ? std::min(c.max_prompt_tokens(), room)
                                 : room;
  limits.max_new_tokens = std::min<uint32_t>(c.max_new_tokens(), room);
  limits.default_max_new_tokens =
      std::min(c.default_max_new_tokens(), limits.max_new_tokens);
  limits.max_num_beams = c.max_num_beams();
  limits.max_return_sequences = c.max_return_sequences();
  limits.max_stop_sequences = c.max_stop_sequences();
  limits.max_stop_sequence_bytes = c.max_stop_sequence_bytes();
  limits.max_request_bytes = c.max_request_bytes();
  limits.max_request_time = absl::Seconds(c.max_request_time_s());
  limits.lm_vocab_size = model.lm_vocab_size;
  return limits;
}

}  // namespace iblip::server
