#pragma once

// Shared by the per-format decoders (internal to image_decoder.cc): how a
// refusal is worded, the pixel limit, and the two colour rules of Pillow that
// several formats need.

#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/image_decoder.h"
#include "model/runtime/pil_resize.h"

namespace iblip::model::image_codecs {

// Where a decoder reports to: the request field its messages start with, the
// format's name for them, and the limits.
struct DecodeContext {
  absl::string_view field;   // e.g. "images[0].data"
  absl::string_view format;  // e.g. "PNG"
  const ImageLimits& limits;
};

// Why an image is refused; every kind is INVALID_ARGUMENT.
enum class Refusal {
  kTruncated,    // data ends before every pixel was decoded
  kCorrupt,      // the data contradicts the format
  kUnsupported,  // valid, but a variant the decoder does not handle
};

// "<field>: <format> image is truncated (<detail>)" and the like.
absl::Status Refuse(const DecodeContext& context, Refusal why,
                    absl::string_view detail);

// The encoded bytes as the C libraries read them, through callbacks.
struct MemoryReader {
  absl::string_view data;
  uint64_t offset = 0;      // may be past the end (libtiff seeks freely)
  bool short_read = false;  // some read asked for bytes past the end

  // Copies up to `size` bytes from `offset` on and returns how many.
  size_t Read(void* out, size_t size);
};

// Refuses a width x height image above limits.max_image_pixels, or without
// pixels, before its pixels are allocated. Every decoder calls it as soon as
// it knows the size of what it will allocate.
absl::Status CheckPixelLimit(const DecodeContext& context, uint64_t width,
                             uint64_t height);

// An all-black width x height image (the sizes passed CheckPixelLimit).
Rgb8Image NewRgb8Image(uint64_t width, uint64_t height);

// A palette as Pillow holds one: 256 entries, initialised to the grey ramp
// (i, i, i), of which a file's palette overwrites the first entries. Indices
// past the file's palette therefore come out grey, as in Pillow.
class PilPalette {
 public:
  PilPalette();
  void Set(int index, uint8_t r, uint8_t g, uint8_t b);
  const uint8_t* operator[](int index) const { return rgb_[index].data(); }

 private:
  std::array<std::array<uint8_t, 3>, 256> rgb_;
};

// The image as Pillow 9.4's TIFF loader leaves it for a TIFF Orientation
// tag (1..8): it applies the tag in load_end (FLIP_LEFT_RIGHT for 2,
// ROTATE_180 for 3, ..., ROTATE_90 for 8); other values leave it as is.
Rgb8Image OrientLikePilTiff(Rgb8Image image, int orientation);

// Pillow's convert("RGB") of a CMYK pixel (Convert.c cmyk2rgb):
// k' = 255 - k, channel = k' - round(c * k' / 255), with Pillow's rounding.
void CmykToRgbLikePil(const uint8_t cmyk[4], uint8_t rgb[3]);

}  // namespace iblip::model::image_codecs
