#include "model/runtime/pil_resize.h"

#include <algorithm>
#include <cmath>

namespace iblip::model {
namespace {

// Pillow: PRECISION_BITS = 32 - 8 - 2.
constexpr int kPrecisionBits = 22;
constexpr double kBicubicSupport = 2.0;

double BicubicKernel(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output position: the first input index, the tap count and the
// fixed-point weights (Pillow's precompute_coeffs + normalize_coeffs_8bpc).
struct Coefficients {
  int taps = 0;                 // ksize
  std::vector<int> first;       // per output position
  std::vector<int> count;       // per output position
  std::vector<int32_t> weight;  // out_size * taps
};

Coefficients Precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filter_scale;
  Coefficients c;
  c.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weight.assign(static_cast<size_t>(out_size) * c.taps, 0);
  std::vector<double> k(c.taps);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double inv = 1.0 / filter_scale;
    // Pillow truncates (int) these sums; center - support + 0.5 may be < 0.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = BicubicKernel((x + xmin - center + 0.5) * inv);
      total += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double normalized = total != 0.0 ? k[x] / total : k[x];
      const double fixed = normalized * (1 << kPrecisionBits);
      c.weight[static_cast<size_t>(xx) * c.taps + x] =
          static_cast<int32_t>(fixed < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t Clip8(int64_t value) {
  const int64_t shifted = value >> kPrecisionBits;  // arithmetic, as in C
  return static_cast<uint8_t>(std::clamp<int64_t>(shifted, 0, 255));
}

Rgb8Image Horizontal(const Rgb8Image& in, int width) {
  const Coefficients c = Precompute(in.width, width);
  Rgb8Image out{
      width, in.height,
      std::vector<uint8_t>(static_cast<size_t>(width) * in.height * 3)};
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row =
        in.pixels.data() + static_cast<size_t>(y) * in.width * 3;
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * width * 3;
    for (int xx = 0; xx < width; ++xx) {
      const int32_t* k = c.weight.data() + static_cast<size_t>(xx) * c.taps;
      for (int ch = 0; ch < 3; ++ch) {
        int64_t sum = int64_t{1} << (kPrecisionBits - 1);
        for (int x = 0; x < c.count[xx]; ++x)
          sum += row[(x + c.first[xx]) * 3 + ch] * int64_t{k[x]};
        dst[xx * 3 + ch] = Clip8(sum);
      }
    }
  }
  return out;
}

Rgb8Image Vertical(const Rgb8Image& in, int height) {
  const Coefficients c = Precompute(in.height, height);
  const size_t stride = static_cast<size_t>(in.width) * 3;
  Rgb8Image out{in.width, height, std::vector<uint8_t>(stride * height)};
  for (int yy = 0; yy < height; ++yy) {
    const int32_t* k = c.weight.data() + static_cast<size_t>(yy) * c.taps;
    uint8_t* dst = out.pixels.data() + stride * yy;
    for (size_t i = 0; i < stride; ++i) {
      int64_t sum = int64_t{1} << (kPrecisionBits - 1);
      for (int y = 0; y < c.count[yy]; ++y)
        sum += in.pixels[stride * (y + c.first[yy]) + i] * int64_t{k[y]};
      dst[i] = Clip8(sum);
    }
  }
  return out;
}

}  // namespace

Rgb8Image ResizeBicubicLikePil(const Rgb8Image& input, int width, int height) {
  // Pillow skips a pass whose size does not change.
  Rgb8Image horizontal =
      input.width != width ? Horizontal(input, width) : input;
  return horizontal.height != height ? Vertical(horizontal, height)
                                     : horizontal;
}

}  // namespace iblip::model
