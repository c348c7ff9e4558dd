#pragma once

#include <cstdint>
#include <vector>

namespace iblip::model {

// An 8-bit interleaved RGB image.
struct Rgb8Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // row-major, 3 bytes per pixel
};

// Resizes exactly as Pillow's Image.resize(size, Image.BICUBIC) does on an
// 8-bit RGB image (the reference processor's path): a separable convolution,
// horizontal pass first, with the bicubic kernel (a = -0.5) widened by the
// scale when shrinking (antialiasing), coefficients in 22-bit fixed point and
// the intermediate rounded to 8 bits. OpenCV's INTER_CUBIC is a different
// filter (no antialiasing), which is why this exists.
Rgb8Image ResizeBicubicLikePil(const Rgb8Image& input, int width, int height);

}  // namespace iblip::model
