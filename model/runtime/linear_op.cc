#include "model/runtime/linear_op.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "model/runtime/bf16_row_dot.h"

namespace iblip::model {
namespace {

// Outputs per parallel work item: enough to amortize a task, and enough
// items (16 for a 1024-wide layer) to keep both threads busy to the end.
constexpr int64_t kOutputsPerTask = 64;

bool TakesRowDot(const at::Tensor& input, const at::Tensor& weight,
                 const c10::optional<at::Tensor>& bias) {
  static const bool available = Bf16RowDotAvailable();
  if (!available || input.device().type() != c10::DeviceType::CPU ||
      input.scalar_type() != at::kBFloat16 || weight.scalar_type() != at::kBFloat16 ||
      weight.device().type() != c10::DeviceType::CPU || weight.dim() != 2 ||
      !weight.is_contiguous() || input.dim() < 1 || input.size(-1) != weight.size(1)) {
    return false;
  }
  if (bias.has_value() && bias->defined() &&
      (bias->dim() != 1 || bias->size(0) != weight.size(0) ||
       bias->device().type() != c10::DeviceType::CPU)) {
    return false;
  }
  const int64_t depth = weight.size(1);
  const int64_t rows = depth == 0 ? 0 : input.numel() / depth;
  return rows >= 1 && rows <= kRowDotMaxRows;
}

at::Tensor Linear(const at::Tensor& input, const at::Tensor& weight,
                  const c10::optional<at::Tensor>& bias) {
  if (!TakesRowDot(input, weight, bias)) return at::linear(input, weight, bias);
  const at::Tensor x = input.contiguous();
  const int64_t outputs = weight.size(0);
  const int64_t depth = weight.size(1);
  std::vector<int64_t> shape = input.sizes().vec();
  shape.back() = outputs;
  at::Tensor y = at::empty(shape, input.options());
  at::Tensor bias32;
  if (bias.has_value() && bias->defined()) bias32 = bias->to(at::kFloat).contiguous();
  const Bf16RowDotProblem problem{
      reinterpret_cast<const uint16_t*>(x.data_ptr()),
      x.numel() / depth,
      depth,
      reinterpret_cast<const uint16_t*>(weight.data_ptr()),
      outputs,
      depth,
      bias32.defined() ? bias32.data_ptr<float>() : nullptr,
      reinterpret_cast<uint16_t*>(y.data_ptr()),
      outputs};
  const int64_t tasks = (outputs + kOutputsPerTask - 1) / kOutputsPerTask;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    Bf16RowDot(problem, begin * kOutputsPerTask, std::min(outputs, end * kOutputsPerTask));
  });
  return y;
}

at::Tensor LinearElsewhere(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias) {
  return at::linear(input, weight, bias);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(iblip, m) {
  m.def("linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  m.impl("linear", c10::DispatchKey::CPU, TORCH_FN(Linear));
  m.impl("linear", c10::DispatchKey::CUDA, TORCH_FN(LinearElsewhere));
}

void RegisterLinear() {
  TORCH_CHECK(c10::Dispatcher::singleton().findSchema({"iblip::linear", ""}).has_value(),
              "iblip::linear is not registered");
}

}  // namespace iblip::model
