#include "model/runtime/image_codecs/codec_support.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace iblip::model::image_codecs {

absl::Status Refuse(const DecodeContext& context, Refusal why,
                    absl::string_view detail) {
  absl::string_view what = "is corrupt";
  if (why == Refusal::kTruncated) what = "is truncated";
  if (why == Refusal::kUnsupported) what = "uses an unsupported variant";
  return absl::InvalidArgumentError(absl::StrCat(
      context.field, ": ", context.format, " image ", what, " (", detail, ")"));
}

absl::Status CheckPixelLimit(const DecodeContext& context, uint64_t width,
                             uint64_t height) {
  if (width == 0 || height == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(context.field, ": ", context.format, " image is ", width,
                     "x", height, " (no pixels)"));
  }
  // Both factors are below 2^32 in every format, so the product cannot wrap.
  const uint64_t pixels = width * height;
  if (width > std::numeric_limits<uint32_t>::max() ||
      height > std::numeric_limits<uint32_t>::max() ||
      pixels > context.limits.max_image_pixels ||
      width > static_cast<uint64_t>(std::numeric_limits<int>::max()) ||
      height > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        context.field, ": image is ", width, "x", height, " = ", pixels,
        " pixels, more than the limit of ", context.limits.max_image_pixels));
  }
  return absl::OkStatus();
}

size_t MemoryReader::Read(void* out, size_t size) {
  const uint64_t left = offset < data.size() ? data.size() - offset : 0;
  const size_t n = size < left ? size : static_cast<size_t>(left);
  if (n > 0) std::memcpy(out, data.data() + offset, n);
  offset += n;
  if (n < size) short_read = true;
  return n;
}

Rgb8Image NewRgb8Image(uint64_t width, uint64_t height) {
  Rgb8Image image;
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.pixels.assign(width * height * 3, 0);
  return image;
}

PilPalette::PilPalette() {
  for (int i = 0; i < 256; ++i) {
    const auto v = static_cast<uint8_t>(i);
    rgb_[i] = {v, v, v};
  }
}

void PilPalette::Set(int index, uint8_t r, uint8_t g, uint8_t b) {
  rgb_[index] = {r, g, b};
}

Rgb8Image OrientLikePilTiff(Rgb8Image image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const uint64_t w = image.width, h = image.height;
  // 5..8 swap the axes.
  const bool swap = orientation >= 5;
  Rgb8Image out = NewRgb8Image(swap ? h : w, swap ? w : h);
  for (uint64_t y = 0; y < static_cast<uint64_t>(out.height); ++y) {
    for (uint64_t x = 0; x < static_cast<uint64_t>(out.width); ++x) {
      uint64_t sx = x, sy = y;  // the source pixel of output (x, y)
      switch (orientation) {
        case 2:
          sx = w - 1 - x;
          break;  // FLIP_LEFT_RIGHT
        case 3:
          sx = w - 1 - x, sy = h - 1 - y;
          break;  // ROTATE_180
        case 4:
          sy = h - 1 - y;
          break;  // FLIP_TOP_BOTTOM
        case 5:
          sx = y, sy = x;
          break;  // TRANSPOSE
        case 6:
          sx = y, sy = h - 1 - x;
          break;  // ROTATE_270
        case 7:
          sx = w - 1 - y, sy = h - 1 - x;
          break;  // TRANSVERSE
        case 8:
          sx = w - 1 - y, sy = x;
          break;  // ROTATE_90
      }
      std::memcpy(&out.pixels[(y * out.width + x) * 3],
                  &image.pixels[(sy * w + sx) * 3], 3);
    }
  }
  return out;
}

void CmykToRgbLikePil(const uint8_t cmyk[4], uint8_t rgb[3]) {
  const int not_black = 255 - cmyk[3];
  for (int c = 0; c < 3; ++c) {
    // Pillow's MULDIV255: (a * b + 128) then (t + (t >> 8)) >> 8.
    const int t = cmyk[c] * not_black + 128;
    const int value = not_black - (((t >> 8) + t) >> 8);
    rgb[c] = static_cast<uint8_t>(value < 0 ? 0 : value);
  }
}

}  // namespace iblip::model::image_codecs
