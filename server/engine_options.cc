#include "server/engine_options.h"

namespace iblip::server {

Engine::Options EngineOptionsFrom(const config::SchedulerConfig& c) {
  Engine::Options options;
  options.max_queue_size = static_cast<int>(c.max_queue_size());
  options.max_running_sequences = static_cast<int>(c.max_running_sequences());
  options.kv_cache_bytes = c.kv_cache_mib() << 20;
  options.kv_block_size = static_cast<int>(c.kv_block_size());
  options.max_prefill_chunk = static_cast<int>(c.prefill_token_budget());
  options.decode_interval = absl::Milliseconds(c.decode_interval_ms());
  options.max_step_stretch_percent =
      static_cast<int>(c.max_step_stretch_percent());
  options.vision_max_batch_size = static_cast<int>(c.vision_max_batch_size());
  options.vision_max_queue_delay =
      absl::Microseconds(c.vision_max_queue_delay_us());
  return options;
}

}  // namespace iblip::server
