#pragma once

#include "model/runtime/instructblip_model.h"
#include "server/engine/model_runner.h"

namespace iblip::server {

// The engine's ModelRunner over a loaded model package (the TorchScript
// modules): a thin translation of the engine's types to the model's.
class TorchModelRunner final : public ModelRunner {
 public:
  // `model` must outlive the runner.
  explicit TorchModelRunner(model::InstructBlipModel& model) : model_(model) {}

  bool encoder_decoder() const override { return model_.encoder_decoder(); }
  uint64_t kv_bytes_per_position() const override {
    return model_.kv_bytes_per_position();
  }
  absl::Status AllocateKvCache(int num_blocks, int block_size) override {
    return model_.AllocateKvCache(num_blocks, block_size);
  }
  int vision_num_layers() const override { return model_.vision_num_layers(); }
  absl::StatusOr<std::unique_ptr<VisionActivations>> BeginVision(
      const std::vector<const model::PixelValues*>& images) override;
  absl::Status RunVisionLayers(VisionActivations& activations, int begin,
                               int end) override;
  absl::StatusOr<std::vector<model::VisionFeatures>> FinishVision(
      VisionActivations& activations) override;
  absl::StatusOr<std::vector<model::ImageEmbedding>> QueryImages(
      const std::vector<model::VisionFeatures>& features,
      const std::vector<std::vector<int32_t>>& qformer_ids) override {
    return model_.QueryImages(features, qformer_ids);
  }
  absl::StatusOr<std::vector<float>> Prefill(const PrefillChunk& chunk) override;
  absl::StatusOr<std::vector<std::vector<float>>> Decode(
      const std::vector<DecodeRow>& rows) override;
  absl::Status CopyBlocks(const std::vector<BlockCopy>& copies) override;

 private:
  model::InstructBlipModel& model_;
};

}  // namespace iblip::server
