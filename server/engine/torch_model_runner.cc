#include "server/engine/torch_model_runner.h"

namespace iblip::server {
namespace {

class TorchVisionActivations final : public VisionActivations {
 public:
  explicit TorchVisionActivations(std::unique_ptr<model::VisionState> state)
      : state(std::move(state)) {}
  std::unique_ptr<model::VisionState> state;
};

model::VisionState& StateOf(VisionActivations& activations) {
  return *static_cast<TorchVisionActivations&>(activations).state;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VisionActivations>>
TorchModelRunner::BeginVision(
    const std::vector<const model::PixelValues*>& images) {
  auto state = model_.BeginVision(images);
  if (!state.ok()) return state.status();
  return std::unique_ptr<VisionActivations>(
      new TorchVisionActivations(std::move(*state)));
}

absl::Status TorchModelRunner::RunVisionLayers(VisionActivations& activations,
                                               int begin, int end) {
  return model_.RunVisionLayers(StateOf(activations), begin, end);
}

absl::StatusOr<std::vector<model::VisionFeatures>>
TorchModelRunner::FinishVision(VisionActivations& activations) {
  return model_.FinishVision(StateOf(activations));
}

absl::StatusOr<std::vector<float>> TorchModelRunner::Prefill(
    const PrefillChunk& chunk) {
  model::PagedPrefill paged;
  paged.image = chunk.image;
  paged.tokens = chunk.tokens;
  paged.start = chunk.start;
  paged.end = chunk.end;
  paged.blocks = &chunk.table->blocks;
  paged.cross_blocks = chunk.cross_table ? &chunk.cross_table->blocks : nullptr;
  paged.decoder_tokens = chunk.decoder_tokens;
  return model_.Prefill(paged);
}

absl::StatusOr<std::vector<std::vector<float>>> TorchModelRunner::Decode(
    const std::vector<DecodeRow>& rows) {
  std::vector<model::PagedDecodeRow> paged(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    paged[i].token = rows[i].token;
    paged[i].position = rows[i].position;
    paged[i].candidates = rows[i].candidates;
    paged[i].blocks = &rows[i].table->blocks;
    if (rows[i].cross_table) {
      paged[i].cross_blocks = &rows[i].cross_table->blocks;
      paged[i].cross_length = rows[i].cross_length;
    }
  }
  return model_.Decode(paged);
}

absl::Status TorchModelRunner::CopyBlocks(
    const std::vector<BlockCopy>& copies) {
  std::vector<std::pair<int, int>> pairs;
  for (const BlockCopy& copy : copies) pairs.emplace_back(copy.from, copy.to);
  return model_.CopyBlocks(pairs);
}

}  // namespace iblip::server
