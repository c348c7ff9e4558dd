#pragma once

// A ModelRunner without a model, for engine and scheduler tests (torch-free:
// the sanitizer and ThreadSanitizer builds run them).
//
// It keeps a real paged KV cache of "contents": each position written holds
// an identity (the soft prompt row's, or the token fed there), and the logits
// of a step are a deterministic function of everything the sequence's block
// table lets it read. So a wrong block table, a missed copy on write or a
// lost position changes the tokens, and reading a position nobody wrote is
// an error: tests compare the engine's output with FakeModelRunner::Reference
// (the same function on the true history, no cache involved).
//
// Each call advances a FakeClock by a configurable cost, so scheduling
// tests measure in simulated time. Engine thread only (like every runner),
// except the accessors marked thread-safe.

#include <cstdint>
#include <functional>
#include <set>
#include <vector>

#include "common/mutex.h"
#include "server/engine/clock.h"
#include "server/engine/model_runner.h"

namespace iblip::testing {

class FakeModelRunner final : public server::ModelRunner {
 public:
  struct Options {
    int vocab = 48;
    int vision_layers = 6;
    int query_positions = 4;  // soft prompt rows per image
    bool encoder_decoder = false;
    uint64_t kv_bytes_per_position = 1024;
    // Simulated costs.
    absl::Duration decode_step = absl::Milliseconds(20);
    absl::Duration decode_per_row = absl::Milliseconds(1);
    absl::Duration vision_layer_per_image = absl::Milliseconds(15);
    absl::Duration query_per_image = absl::Milliseconds(5);
    absl::Duration prefill_per_position = absl::Milliseconds(0.5);
    // Decode rows that need n candidates (DecodeRow::candidates) get only
    // the n best logits, the rest -inf, as a GPU runner sends them (the
    // whole row when the n-th and (n+1)-th tie).
    bool only_candidates = false;
  };
  // `clock` must outlive the runner (may be null: no simulated time).
  FakeModelRunner(Options options, server::FakeClock* clock);

  // The logits after `history` (one identity per position): a clear maximum
  // at a token that depends on the whole history, the others spread.
  std::vector<float> Logits(const std::vector<int64_t>& history) const;
  // The identity a soft prompt row writes: images differ by their pixels.
  static int64_t PixelsId(const model::PixelValues& pixels);
  int64_t SoftPromptRow(int64_t embedding_id, int row) const;
  // The embedding id QueryImages gives (image, instruction).
  static int64_t EmbeddingId(int64_t image_id,
                             const std::vector<int32_t>& qformer_ids);
  // The history a prefill of (pixels, qformer ids, prompt) writes.
  std::vector<int64_t> PromptHistory(const model::PixelValues& pixels,
                                     const std::vector<int32_t>& qformer_ids,
                                     const std::vector<int32_t>& prompt) const;

  // Calls fail when these are involved (isolation tests): a poisoned image
  // fails the vision stage, a poisoned token fails decode steps feeding it.
  void PoisonImage(int64_t pixels_id) { poisoned_images_.insert(pixels_id); }
  void PoisonToken(int32_t token) { poisoned_tokens_.insert(token); }

  // What the runner did, for scheduling tests. Thread-safe.
  struct Call {
    enum Kind { kDecode, kVisionBegin, kVisionLayers, kQuery, kPrefill, kCopy };
    Kind kind;
    absl::Time at;  // the clock when the call ended
    int size = 0;   // rows, images, layers, positions or copies
    std::vector<int> candidates;  // kDecode: each row's DecodeRow::candidates
  };
  std::vector<Call> calls() const;
  int blocks_written() const;

  // server::ModelRunner.
  bool encoder_decoder() const override { return options_.encoder_decoder; }
  uint64_t kv_bytes_per_position() const override {
    return options_.kv_bytes_per_position;
  }
  absl::Status AllocateKvCache(int num_blocks, int block_size) override;
  int vision_num_layers() const override { return options_.vision_layers; }
  absl::StatusOr<std::unique_ptr<server::VisionActivations>> BeginVision(
      const std::vector<const model::PixelValues*>& images) override;
  absl::Status RunVisionLayers(server::VisionActivations& activations,
                               int begin, int end) override;
  absl::StatusOr<std::vector<model::VisionFeatures>> FinishVision(
      server::VisionActivations& activations) override;
  absl::StatusOr<std::vector<model::ImageEmbedding>> QueryImages(
      const std::vector<model::VisionFeatures>& features,
      const std::vector<std::vector<int32_t>>& qformer_ids) override;
  absl::StatusOr<std::vector<float>> Prefill(
      const server::PrefillChunk& chunk) override;
  absl::StatusOr<std::vector<std::vector<float>>> Decode(
      const std::vector<server::DecodeRow>& rows) override;
  absl::Status CopyBlocks(const std::vector<server::BlockCopy>& copies) override;

 private:
  void Spend(absl::Duration d, Call::Kind kind, int size);
  absl::Status Write(const server::BlockTable& table, int position,
                     int64_t identity);
  absl::StatusOr<std::vector<int64_t>> Read(const server::BlockTable& table,
                                            int positions) const;

  const Options options_;
  server::FakeClock* const clock_;
  int block_size_ = 0;
  std::vector<int64_t> cache_;  // identity per global slot; -1 unwritten
  std::set<int64_t> poisoned_images_;
  std::set<int32_t> poisoned_tokens_;
  mutable Mutex calls_mutex_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(calls_mutex_);
};

}  // namespace iblip::testing
