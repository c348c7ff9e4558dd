// iblip::linear through the dispatcher, as TorchScript calls it: the bf16
// row-dot path against aten::linear computed in float32 from the same bf16
// values, and every call outside that path (more rows, float32, a bias of
// another shape) giving exactly aten::linear's result.

#include "model/runtime/linear_op.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>

#include "model/runtime/bf16_row_dot.h"

namespace iblip::model {
namespace {

using LinearFn = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&);

at::Tensor CallOp(const at::Tensor& input, const at::Tensor& weight,
                  const c10::optional<at::Tensor>& bias) {
  RegisterLinear();
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("iblip::linear", "").typed<LinearFn>();
  return op.call(input, weight, bias);
}

// The float32 product of the bf16 values, rounded once to bf16: the row-dot
// path may differ from it by one rounding step at most.
void ExpectCloseToExact(const at::Tensor& got, const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias) {
  const at::Tensor exact = at::linear(input.to(at::kDouble), weight.to(at::kDouble),
                                      bias ? c10::optional<at::Tensor>(bias->to(at::kDouble))
                                           : c10::nullopt);
  ASSERT_EQ(got.sizes(), exact.sizes());
  ASSERT_EQ(got.scalar_type(), at::kBFloat16);
  const at::Tensor error = (got.to(at::kDouble) - exact).abs();
  const at::Tensor allowed = exact.abs() * (1.0 / 256) + 1e-3;
  EXPECT_TRUE(error.le(allowed).all().item<bool>())
      << "largest error " << error.max().item<double>();
}

TEST(LinearOpTest, Bf16RowsMatchTheExactProduct) {
  at::manual_seed(1);
  const at::Tensor weight = at::randn({70, 96}).to(at::kBFloat16);
  const at::Tensor bias = at::randn({70}).to(at::kBFloat16);
  // One row takes the row-dot kernel, more rows aten::linear.
  for (const int64_t rows : {int64_t{1}, kRowDotMaxRows + 1, int64_t{7}}) {
    const at::Tensor input = at::randn({rows, 1, 96}).to(at::kBFloat16);  // [B, T=1, H]
    ExpectCloseToExact(CallOp(input, weight, bias), input, weight, bias);
    ExpectCloseToExact(CallOp(input, weight, c10::nullopt), input, weight, c10::nullopt);
  }
}

TEST(LinearOpTest, ANonContiguousInputGivesTheSameResult) {
  at::manual_seed(2);
  const at::Tensor weight = at::randn({9, 40}).to(at::kBFloat16);
  const at::Tensor wide = at::randn({1, 80}).to(at::kBFloat16);  // one row: the kernel
  const at::Tensor strided = wide.slice(1, 0, 80, 2);  // every other column
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_TRUE(at::equal(CallOp(strided, weight, c10::nullopt),
                        CallOp(strided.contiguous(), weight, c10::nullopt)));
}

TEST(LinearOpTest, EveryOtherCallIsAtenLinearExactly) {
  at::manual_seed(3);
  const at::Tensor weight = at::randn({33, 64});
  const at::Tensor bias = at::randn({33});
  const at::Tensor bf16_weight = weight.to(at::kBFloat16);
  const at::Tensor bf16_bias = bias.to(at::kBFloat16);
  // float32; a prefill's many rows; no rows at all.
  const at::Tensor fp32 = at::randn({2, 64});
  EXPECT_TRUE(at::equal(CallOp(fp32, weight, bias), at::linear(fp32, weight, bias)));
  const at::Tensor prefill = at::randn({1, kRowDotMaxRows + 1, 64}).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(CallOp(prefill, bf16_weight, bf16_bias),
                        at::linear(prefill, bf16_weight, bf16_bias)));
  const at::Tensor empty = at::empty({0, 64}, at::kBFloat16);
  EXPECT_EQ(CallOp(empty, bf16_weight, bf16_bias).sizes(), (at::IntArrayRef{0, 33}));
}

TEST(LinearOpTest, MismatchedShapesAreRefusedAsAtenRefusesThem) {
  const at::Tensor weight = at::randn({8, 16}).to(at::kBFloat16);
  const at::Tensor input = at::randn({2, 15}).to(at::kBFloat16);
  EXPECT_THROW(CallOp(input, weight, c10::nullopt), c10::Error);
  const at::Tensor short_bias = at::randn({7}).to(at::kBFloat16);
  EXPECT_THROW(CallOp(at::randn({2, 16}).to(at::kBFloat16), weight, short_bias), c10::Error);
}

TEST(LinearOpTest, TheResultDoesNotDependOnTheThreadCount) {
  if (!Bf16RowDotAvailable()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  at::manual_seed(4);
  const at::Tensor weight = at::randn({1000, 128}).to(at::kBFloat16);
  const at::Tensor input = at::randn({kRowDotMaxRows, 128}).to(at::kBFloat16);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = CallOp(input, weight, c10::nullopt);
  at::set_num_threads(2);
  const at::Tensor two = CallOp(input, weight, c10::nullopt);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
}

}  // namespace
}  // namespace iblip::model
