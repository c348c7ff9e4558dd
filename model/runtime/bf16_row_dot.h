#pragma once

#include <cstdint>

namespace iblip::model {

// y = x * w^T (+ bias) in bfloat16, as a decode step of one sequence needs
// it: x [rows, depth] and w [outputs, depth] (nn.Linear's layout, row-major,
// bf16 bit patterns), sums in float32, y [rows, outputs] rounded to bf16
// (nearest even). The cost of such a product is reading w once. oneDNN
// reads it for one row at about 14-19 GB/s on this machine; this kernel,
// one output at a time with AVX512-BF16 dot products, streams each row of w
// front to back and gets 22-29 GB/s (bench: module_bench linear). Each row
// of x reads w again: with more rows oneDNN's blocked product is faster, so
// the operator gives this kernel one row only (linear_op.h).
struct Bf16RowDotProblem {
  const uint16_t* x;
  int64_t rows;
  int64_t x_stride;  // elements between rows of x
  const uint16_t* w;
  int64_t outputs;
  int64_t depth;
  const float* bias;  // [outputs] or nullptr
  uint16_t* y;
  int64_t y_stride;  // elements between rows of y
};

// Whether this CPU runs the kernel (AVX512-BF16). Where it does not, callers
// use their general matrix product.
bool Bf16RowDotAvailable();

// Computes outputs [first_output, end_output) of every row; disjoint ranges
// may run on different threads. Requires Bf16RowDotAvailable().
void Bf16RowDot(const Bf16RowDotProblem& problem, int64_t first_output, int64_t end_output);

}  // namespace iblip::model
