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
#include "model/runtime/package.h"

namespace iblip::model {

// The soft prompt of one image: the projected Q-Former query outputs,
// [num_query_tokens, lm_hidden] on the model's device. Opaque, immutable,
// cheap to copy (shared).
class ImageEmbedding {
 public:
  ImageEmbedding() = default;
  int num_positions() const;
  bool empty() const { return impl_ == nullptr; }

 private:
  friend class InstructBlipModel;
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

struct RuntimeOptions {
  std::string device = "cpu";  // "cpu" or "cuda:N"
  int num_threads = 0;         // torch intra-op threads; 0 = number of CPUs
};

// Vision encoder -> Q-Former -> projection -> language model, as TorchScript
// modules of a model package. NOT thread-safe: exactly one thread (the
// engine thread) calls into it. Errors from torch become absl::Status here
// and never escape as exceptions.
class InstructBlipModel {
 public:
  static absl::StatusOr<std::unique_ptr<InstructBlipModel>> Load(
      const PackageManifest& manifest, const RuntimeOptions& options);
  ~InstructBlipModel();
  InstructBlipModel(const InstructBlipModel&) = delete;
  InstructBlipModel& operator=(const InstructBlipModel&) = delete;

  // Runs the vision encoder and the instruction-aware Q-Former on one image.
  absl::StatusOr<ImageEmbedding> EncodeImage(
      const PixelValues& pixels, const std::vector<int32_t>& qformer_ids);

  // Logits [vocab] for the token that follows `ids` (prompt then generated
  // tokens) after the image's soft prompt.
  absl::StatusOr<std::vector<float>> NextTokenLogits(
      const ImageEmbedding& image, const std::vector<int32_t>& ids);

  const std::string& device() const;

 private:
  struct Impl;
  explicit InstructBlipModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iblip::model
