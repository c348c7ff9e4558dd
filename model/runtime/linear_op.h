#pragma once

namespace iblip::model {

// The operator bf16 language models call for their Linear layers
// (model/PACKAGE.md):
//
//   iblip::linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor
//
// It computes what aten::linear computes. On a CPU with AVX512-BF16, bf16
// input of at most kRowDotMaxRows rows (one sequence's decode step) goes
// through Bf16RowDot, which reads the weight faster than oneDNN does for a
// single row; every other call is aten::linear itself. Registered by a static initializer in
// linear_op.cc; call this once before loading a module that uses it (the
// call keeps that object file linked, and checks the registration).
void RegisterLinear();

// The most rows the row-dot kernel takes: at two rows it was no faster than
// oneDNN, at four and more slower (measured with module_bench linear).
inline constexpr long kRowDotMaxRows = 1;

}  // namespace iblip::model
