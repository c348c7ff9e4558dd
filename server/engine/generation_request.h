#pragma once

// What travels from the transports through preprocessing into the engine,
// and what comes back. No gRPC or torch types here.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/model_tensors.h"
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

// Sequences a request decodes at once: one per beam, or one per returned
// sequence.
inline int SequencesNeeded(const GenerationSettings& s) {
  return s.num_beams > 1 ? s.num_beams : s.num_return_sequences;
}

// New tokens of one sequence, as the engine produces them (no text: the
// request side detokenizes).
struct TokenDelta {
  int index = 0;
  std::vector<int32_t> token_ids;
  absl::Duration elapsed;  // since the request arrived
  FinishReason finish_reason = FinishReason::kNone;
};

// New output of one sequence, with its text, as the transports send it.
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
  int preemptions = 0;  // times the engine evicted and recomputed it
};

// Where the engine's results go: the request side's output processor.
// Thread-safety: called from the engine thread (and the preprocessing pool
// for early errors); implementations must be thread-safe, cheap and never
// block.
class TokenSink {
 public:
  virtual ~TokenSink() = default;
  virtual void OnTokens(TokenDelta delta) = 0;
  // Called exactly once, last. OK status: every sequence finished.
  virtual void OnComplete(const absl::Status& status,
                          const UsageStats& usage) = 0;
};

// Where a request's text results go: the transports (gRPC reactors, HTTP
// streams). Same threading contract as TokenSink.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void OnDelta(SequenceDelta delta) = 0;
  virtual void OnComplete(const absl::Status& status,
                          const UsageStats& usage) = 0;
};

// One request, shared by its transport (which may cancel it), the request
// side's output processor and the engine.
struct GenerationRequest {
  std::string request_id;
  Priority priority = Priority::kNormal;
  absl::Time arrival;
  absl::Time deadline = absl::InfiniteFuture();
  // The server's own warm-up: kept out of every metric, so they count
  // exactly what clients sent.
  bool internal = false;
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

  // Set by the transport on client cancel/disconnect; the engine checks it
  // before every step and drops the request.
  std::atomic<bool> cancelled{false};
  // Bit i: the request side found a stop sequence in sequence i's text; the
  // engine finishes that sequence before its next step.
  std::atomic<uint64_t> stop_sequence_hits{0};

  std::shared_ptr<TokenSink> sink;
};

}  // namespace iblip::server
