#pragma once

// Handles on tensors the model runtime computed, without torch types: the
// engine, the feature cache and their tests pass them around (and the
// sanitizer build compiles them) without knowing what is inside.

#include <cstdint>
#include <memory>
#include <utility>

namespace iblip::model {

// A tensor owned by a model runtime. The runtime that made it is the only
// code that looks inside (TorchScript: a torch::Tensor; tests: a fake).
class TensorHandle {
 public:
  virtual ~TensorHandle() = default;
  virtual uint64_t bytes() const = 0;  // memory held
  // Rows: the vision encoder's positions, or the soft prompt's query tokens.
  virtual int rows() const = 0;
};

// Shared, immutable ownership of one TensorHandle; cheap to copy.
template <typename Tag>
class SharedTensor {
 public:
  SharedTensor() = default;
  explicit SharedTensor(std::shared_ptr<const TensorHandle> handle)
      : handle_(std::move(handle)) {}
  bool empty() const { return handle_ == nullptr; }
  uint64_t bytes() const { return handle_ ? handle_->bytes() : 0; }
  const TensorHandle* handle() const { return handle_.get(); }

 private:
  std::shared_ptr<const TensorHandle> handle_;
};

// The vision encoder's output for one image, [1+patches, vision_hidden]:
// what the server caches by image content, so another question about the
// same image skips the vision encoder.
using VisionFeatures = SharedTensor<struct VisionFeaturesTag>;

// The soft prompt of one image: the projected Q-Former query outputs,
// [num_query_tokens, lm_hidden]; the first positions of the language model's
// input.
class ImageEmbedding : public SharedTensor<struct ImageEmbeddingTag> {
 public:
  using SharedTensor::SharedTensor;
  int num_positions() const { return handle() ? handle()->rows() : 0; }
};

}  // namespace iblip::model
