#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iblip {

// Where the model runs (runtime.device): the CPU or one CUDA GPU.
struct DeviceSpec {
  bool cuda = false;
  int index = 0;  // the GPU's ordinal; 0 for the CPU

  // "cpu" or "cuda:N": the spelling torch::Device takes.
  std::string ToString() const;
};

// Largest GPU ordinal accepted; far above any node's GPU count, low enough
// that no arithmetic on it overflows.
inline constexpr int kMaxCudaIndex = 1023;

// Parses runtime.device: "cpu", "cuda" (GPU 0) or "cuda:N" (N decimal, no
// sign, at most kMaxCudaIndex), exactly, without surrounding spaces. Anything
// else is INVALID_ARGUMENT naming runtime.device. Whether the GPU exists is
// the runtime's question (InstructBlipModel::Load), not the config's.
absl::StatusOr<DeviceSpec> ParseDevice(absl::string_view text);

}  // namespace iblip
