// Bf16RowDot against float64 sums of the same bf16 values: every row count
// up to the kernel's group and past it, depths with and without a tail,
// output counts around its four-wide pass, bias, strided rows and output
// ranges. Cells outside a call's range must keep what they held (the
// sanitizer build also runs this, so a read past a row is caught there).

#include "model/runtime/bf16_row_dot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <vector>

namespace iblip::model {
namespace {

float Widen(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

uint16_t Narrow(float value) {  // truncation: any bf16 value will do as input
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}

constexpr uint16_t kSentinel = 0x7fc1;  // a NaN the kernel never writes

struct Case {
  int64_t rows, depth, outputs;
  bool bias;
  int64_t x_pad = 0, y_pad = 0;  // extra elements per row (strides)
};

void PrintTo(const Case& c, std::ostream* out) {
  *out << c.rows << " rows, depth " << c.depth << ", " << c.outputs << " outputs"
       << (c.bias ? ", bias" : "") << ", pads " << c.x_pad << "/" << c.y_pad;
}

class Bf16RowDotTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!Bf16RowDotAvailable()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  }
};

TEST_P(Bf16RowDotTest, MatchesFloat64SumsAndWritesOnlyItsRange) {
  const Case c = GetParam();
  std::mt19937 random(static_cast<uint32_t>(c.rows * 131 + c.depth * 7 + c.outputs));
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t x_stride = c.depth + c.x_pad;
  const int64_t y_stride = c.outputs + c.y_pad;
  // Exactly sized buffers: a read past the last row is out of bounds.
  std::vector<uint16_t> x(c.rows * x_stride), w(c.outputs * c.depth);
  for (auto& v : x) v = Narrow(normal(random));
  for (auto& v : w) v = Narrow(normal(random));
  std::vector<float> bias(c.outputs);
  for (auto& v : bias) v = normal(random);
  std::vector<uint16_t> y(c.rows * y_stride, kSentinel);
  const Bf16RowDotProblem problem{x.data(), c.rows, x_stride, w.data(), c.outputs, c.depth,
                                  c.bias ? bias.data() : nullptr, y.data(), y_stride};
  // Two disjoint ranges leave [first, second) alone.
  const int64_t first = c.outputs / 3, second = first + (c.outputs - first) / 2;
  Bf16RowDot(problem, 0, first);
  Bf16RowDot(problem, second, c.outputs);

  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t o = 0; o < y_stride; ++o) {
      const uint16_t got = y[r * y_stride + o];
      if (o >= c.outputs || (o >= first && o < second)) {
        EXPECT_EQ(got, kSentinel) << "row " << r << " output " << o << " was written";
        continue;
      }
      double exact = c.bias ? bias[o] : 0.0, magnitude = c.bias ? std::fabs(bias[o]) : 0.0;
      for (int64_t k = 0; k < c.depth; ++k) {
        const double term = static_cast<double>(Widen(x[r * x_stride + k])) * Widen(w[o * c.depth + k]);
        exact += term;
        magnitude += std::fabs(term);
      }
      // Rounding to bf16 (half of 2^-7 relative) and float32 sums.
      const double tolerance = std::ldexp(std::fabs(exact), -8) + 1e-5 * magnitude + 1e-30;
      EXPECT_NEAR(Widen(got), exact, tolerance) << "row " << r << " output " << o;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Bf16RowDotTest,
    ::testing::Values(Case{1, 1, 1, false}, Case{1, 32, 4, false}, Case{1, 33, 5, true},
                      Case{2, 31, 3, true}, Case{3, 64, 8, false}, Case{4, 100, 9, true},
                      Case{5, 1024, 7, false}, Case{6, 96, 70, true}, Case{7, 200, 13, true},
                      Case{12, 65, 6, false}, Case{13, 1000, 11, true},
                      Case{16, 128, 66, true, 5, 3}, Case{3, 40, 5, false, 24, 1}));

TEST(Bf16RowDotRounding, RoundsToNearestEvenLikeTorch) {
  if (!Bf16RowDotAvailable()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: nearest
  // even is 1. 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even
  // is 1 + 2^-6. The bias carries the sum's low bits.
  const uint16_t one = Narrow(1.f), zero = 0;
  for (const auto& [bias, expected] :
       std::vector<std::pair<float, float>>{{std::ldexp(1.f, -8), 1.f},
                                            {3 * std::ldexp(1.f, -8), 1.f + std::ldexp(1.f, -6)}}) {
    const uint16_t x[2] = {one, zero};
    const uint16_t w[2] = {one, zero};
    uint16_t y = 0;
    Bf16RowDot({x, 1, 2, w, 1, 2, &bias, &y, 1}, 0, 1);
    EXPECT_EQ(Widen(y), expected) << "bias " << bias;
  }
}

}  // namespace
}  // namespace iblip::model
