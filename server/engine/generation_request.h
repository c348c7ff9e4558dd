#pragma once

// What travels from the gRPC handlers through preprocessing into the engine,
// and what comes back. No gRPC or torch types here.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/instructblip_model.h"
#include "model/runtime/sampler.h"

namespace iblip::server {

enum class Priority { kLow = 0, kNormal = 1, kHigh = 2 };
inline constexpr int kNumPriorities = 3;

enum class FinishReason {
  kNone,
  kStop,
  kLength,
  kStopSequence,
  kCancelled,
  kError
};

// Decoding settings after validation and defaults: every field is set.
struct GenerationSettings {
  int max_new_tokens = 64;
  int num_return_sequences = 1;
  int num_beams = 1;
  float length_penalty = 1.0f;
  bool early_stopping = false;
  std::vector<std::string> stop_sequences;
  uint64_t seed = 0;
  model::SamplingParams sampling;  // eos_token_ids filled by the engine
};

// KV cache slots a request holds while it runs: one per beam, or one per
// returned sequence.
inline int SlotsNeeded(const GenerationSettings& s) {
  return s.num_beams > 1 ? s.num_beams : s.num_return_sequences;
}

// New output of one sequence.
struct SequenceDelta {
  int index = 0;
  std::string text;
  std::vector<int32_t> token_ids;
  absl::Duration elapsed;  // since the request arrived
  FinishReason finish_reason = FinishReason::kNone;
};

struct UsageStats {
  int prompt_tokens = 0;
  int image_tokens = 0;
  int generated_tokens = 0;
  absl::Duration queue_time;
  absl::Duration time_to_first_token;
  absl::Duration total_time;
  uint64_t seed = 0;
};

// Where a request's results go. Implemented by the gRPC reactors.
// Thread-safety: called from the engine thread (and the preprocessing pool
// for early errors); implementations must be thread-safe and never block.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void OnDelta(SequenceDelta delta) = 0;
  // Called exactly once, last. OK status: every sequence finished.
  virtual void OnComplete(const absl::Status& status,
                          const UsageStats& usage) = 0;
};

// One request, shared by its reactor (which may cancel it) and the engine.
struct GenerationRequest {
  std::string request_id;
  Priority priority = Priority::kNormal;
  absl::Time arrival;
  absl::Time deadline = absl::InfiniteFuture();
  // The server's own warm-up: kept out of the per-request metrics, so they
  // count exactly what clients sent.
  bool internal = false;
  // When the engine took it from its queue (the end of queue time).
  absl::Time scheduled = absl::InfinitePast();
  GenerationSettings settings;

  // Filled by preprocessing.
  std::string prompt;
  std::string image_hash;           // SHA-256 of the image bytes: the cache key
  model::PixelValues pixels;        // empty when `vision` came from the cache
  std::vector<int32_t> prompt_ids;  // LM ids
  std::vector<int32_t> qformer_ids;  // Q-Former ids

  // The image's encodings: from the feature cache when it had them, else
  // from the engine's vision stage. `image` set means ready for prefill.
  model::VisionFeatures vision;
  model::ImageEmbedding image;

  // Set by the reactor on client cancel/disconnect; the engine checks it at
  // every decode step and drops the request.
  std::atomic<bool> cancelled{false};

  std::shared_ptr<ResponseSink> sink;
};

}  // namespace iblip::server
