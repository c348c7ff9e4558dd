#pragma once

// The TorchScript runtime behind a header without torch types: only
// instructblip_model.cc includes <torch/script.h> (each torch translation
// unit costs ~12 s and ~0.8 GB to compile).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/model_tensors.h"
#include "model/runtime/package.h"

namespace iblip::model {

// The vision encoder's activations between pieces of its work (a batch of
// images part-way through the encoder's layers). Opaque; engine thread only.
class VisionState {
 public:
  ~VisionState();
  VisionState(const VisionState&) = delete;
  VisionState& operator=(const VisionState&) = delete;

 private:
  friend class InstructBlipModel;
  struct Impl;
  explicit VisionState(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One sequence's row of a paged decode step: `token` enters at `position`;
// `blocks` is its block table (block i holds positions i*block_size ..).
struct PagedDecodeRow {
  int32_t token = 0;
  int position = 0;
  const std::vector<int>* blocks = nullptr;
  // T5: the encoder's cross-attention blocks and their positions.
  const std::vector<int>* cross_blocks = nullptr;
  int cross_length = 0;
  // How many of the row's best logits the caller needs: 0 = all of them;
  // n > 0 = only the n largest, and every other id may come back as -inf
  // (Sampler::CandidatesNeeded). On a GPU only those cross to the host.
  int candidates = 0;
};

// One chunk of a sequence's prefill: positions [start, end). Positions below
// the image's num_positions() are its soft prompt; position p above is
// tokens[p - num_positions()]. T5: the encoder reads [soft prompt; tokens]
// (start == 0) and writes cross keys/values into `cross_blocks`; decoder
// position 0 is the start token and position p > 0 is decoder_tokens[p - 1].
struct PagedPrefill {
  const ImageEmbedding* image = nullptr;
  const std::vector<int32_t>* tokens = nullptr;
  int start = 0;
  int end = 0;
  const std::vector<int>* blocks = nullptr;
  const std::vector<int>* cross_blocks = nullptr;
  const std::vector<int32_t>* decoder_tokens = nullptr;
};

struct RuntimeOptions {
  std::string device = "cpu";  // runtime.device: "cpu", "cuda" or "cuda:N"
  int num_threads = 0;         // torch intra-op threads; 0 = number of CPUs
  // Decode's device path (only the rows' candidates leave the logits) on the
  // CPU too, where the logits are already in host memory and all of them are
  // returned otherwise; for tests of that path without a GPU.
  bool candidates_on_cpu = false;
};

// Vision encoder -> Q-Former + projection -> language model, as the
// TorchScript modules of a model package. NOT thread-safe: exactly one thread
// (the engine thread) calls into it. Errors from torch become absl::Status
// here and never escape as exceptions.
class InstructBlipModel {
 public:
  static absl::StatusOr<std::unique_ptr<InstructBlipModel>> Load(
      const PackageManifest& manifest, const RuntimeOptions& options);
  ~InstructBlipModel();
  InstructBlipModel(const InstructBlipModel&) = delete;
  // Applies the RuntimeOptions' thread count to the calling thread (torch's
  // setting is per thread); the thread that calls into the model runs it
  // once before its first call.
  void BindCallingThread() const;
  InstructBlipModel& operator=(const InstructBlipModel&) = delete;

  // Runs the vision encoder and the instruction-aware Q-Former on one image.
  // `qformer_mask` (1 keep, 0 padding) defaults to all ones; the server never
  // pads, since padding shifts the Q-Former's text positions.
  absl::StatusOr<ImageEmbedding> EncodeImage(
      const PixelValues& pixels, const std::vector<int32_t>& qformer_ids,
      const std::vector<int32_t>& qformer_mask = {});

  // The vision encoder whole, over several images (all of the package's
  // size).
  absl::StatusOr<std::vector<VisionFeatures>> EncodeVision(
      const std::vector<const PixelValues*>& images);
  // ... and in pieces, so the engine can put decode steps between them:
  // Begin embeds the images, RunVisionLayers runs encoder layers
  // [begin, end), Finish returns one VisionFeatures per image.
  int vision_num_layers() const;
  absl::StatusOr<std::unique_ptr<VisionState>> BeginVision(
      const std::vector<const PixelValues*>& images);
  absl::Status RunVisionLayers(VisionState& state, int begin, int end);
  absl::StatusOr<std::vector<VisionFeatures>> FinishVision(VisionState& state);
  // One Q-Former pass over several (image, instruction) pairs. Instructions
  // of different lengths are right-padded and masked: text positions start
  // at 0 in every row, so each row equals its unbatched result up to float
  // rounding.
  absl::StatusOr<std::vector<ImageEmbedding>> QueryImages(
      const std::vector<VisionFeatures>& features,
      const std::vector<std::vector<int32_t>>& qformer_ids);

  // The paged KV cache (engine thread). ---------------------------------
  // Keys and values of one position, all layers, in bytes.
  uint64_t kv_bytes_per_position() const;
  bool encoder_decoder() const;
  // Allocates the pool: `num_blocks` blocks of `block_size` positions.
  absl::Status AllocateKvCache(int num_blocks, int block_size);
  // Runs one prefill chunk (writing its keys/values into its blocks);
  // returns the logits of the chunk's last position.
  absl::StatusOr<std::vector<float>> Prefill(const PagedPrefill& chunk);
  // One decode step for many sequences of different lengths at once;
  // logits per row. Each row's result does not depend on the others. On a
  // GPU, a row that needs only its n best candidates (PagedDecodeRow::
  // candidates) gets them selected on the device (top-k) and only they cross
  // to the host, through pinned memory; its other logits are -inf. A row
  // whose n-th and (n+1)-th best tie comes back whole, so a sampler that
  // keeps ties, or takes the first of equal maxima, sees what it would in
  // the full row.
  absl::StatusOr<std::vector<std::vector<float>>> Decode(
      const std::vector<PagedDecodeRow>& rows);
  // Block `to` takes the contents of block `from`, pair by pair in order.
  absl::Status CopyBlocks(const std::vector<std::pair<int, int>>& copies);

  const std::string& device() const;

 private:
  struct Impl;
  explicit InstructBlipModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iblip::model
