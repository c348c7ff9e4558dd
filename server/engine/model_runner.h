#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/model_tensors.h"
#include "server/engine/kv_block_manager.h"

namespace iblip::server {

// The vision encoder's activations of a batch of images between pieces of
// its work (the engine runs a few layers per step). Owned by the engine,
// opaque: only the runner that made it looks inside.
class VisionActivations {
 public:
  virtual ~VisionActivations() = default;
};

// One piece of a sequence's prefill: positions [start, end) of its input,
// written into `table` (which holds at least `end` positions). Positions
// below image.num_positions() are the soft prompt's rows; position p above
// them is tokens[p - image.num_positions()] (the prompt, and after a
// preemption the generated tokens too).
struct PrefillChunk {
  const model::ImageEmbedding* image = nullptr;
  const std::vector<int32_t>* tokens = nullptr;
  int start = 0;
  int end = 0;
  const BlockTable* table = nullptr;
  // Encoder-decoder models (T5): the encoder reads [soft prompt; tokens] and
  // its cross-attention keys/values go to `cross_table`; the decoder's own
  // positions are then the start token (position 0) and, after a
  // preemption, the generated tokens fed one by one (`decoder_tokens`).
  const BlockTable* cross_table = nullptr;
  const std::vector<int32_t>* decoder_tokens = nullptr;
};

// One sequence's row of a decode step: `token` enters at `position`, whose
// key/value the runner writes into `table`.
struct DecodeRow {
  int32_t token = 0;
  int position = 0;
  const BlockTable* table = nullptr;
  // T5: the encoder's cross-attention blocks and their positions.
  const BlockTable* cross_table = nullptr;
  int cross_length = 0;
  // How many of the row's best logits the engine needs (its sampler's
  // Sampler::CandidatesNeeded): 0 = all (beam search, penalties, top-p);
  // n > 0 = only the n largest, the rest may come back as -inf. A runner
  // whose logits live on a GPU then copies only those to the host.
  int candidates = 0;
};

// What the engine asks of the model; everything that touches tensors. The
// engine thread is the only caller. Implementations: TorchModelRunner (the
// TorchScript package) and the tests' FakeModelRunner.
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // True for encoder-decoder models (T5): prefill is one piece (the
  // encoder is not causal) and each sequence also holds cross blocks.
  virtual bool encoder_decoder() const = 0;
  // Bytes of KV cache one position takes (all layers, keys and values).
  virtual uint64_t kv_bytes_per_position() const = 0;
  // Creates the block pool; called once, before any prefill or decode.
  virtual absl::Status AllocateKvCache(int num_blocks, int block_size) = 0;

  // The vision encoder in pieces: Begin embeds the images (all of the
  // model's size), RunVisionLayers runs encoder layers [begin, end), Finish
  // returns one VisionFeatures per image.
  virtual int vision_num_layers() const = 0;
  virtual absl::StatusOr<std::unique_ptr<VisionActivations>> BeginVision(
      const std::vector<const model::PixelValues*>& images) = 0;
  virtual absl::Status RunVisionLayers(VisionActivations& activations,
                                       int begin, int end) = 0;
  virtual absl::StatusOr<std::vector<model::VisionFeatures>> FinishVision(
      VisionActivations& activations) = 0;
  // The instruction-aware Q-Former + projection for (features, instruction)
  // pairs; one soft prompt each.
  virtual absl::StatusOr<std::vector<model::ImageEmbedding>> QueryImages(
      const std::vector<model::VisionFeatures>& features,
      const std::vector<std::vector<int32_t>>& qformer_ids) = 0;

  // Runs one prefill chunk; returns the logits of its last position.
  virtual absl::StatusOr<std::vector<float>> Prefill(
      const PrefillChunk& chunk) = 0;
  // One decode step for many sequences; logits per row, in order. A row's
  // result does not depend on the others.
  virtual absl::StatusOr<std::vector<std::vector<float>>> Decode(
      const std::vector<DecodeRow>& rows) = 0;
  // Copies blocks (copy on write), in order.
  virtual absl::Status CopyBlocks(const std::vector<BlockCopy>& copies) = 0;
};

}  // namespace iblip::server
