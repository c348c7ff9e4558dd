#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/image_decoder.h"
#include "model/runtime/package.h"

namespace iblip::model {

// An image ready for the vision encoder: [3, size, size] float32, RGB,
// rescaled and normalized, channel-major.
struct PixelValues {
  int size = 0;
  std::vector<float> chw;
};

// Turns encoded image bytes into PixelValues as Hugging Face's
// BlipImageProcessor (PIL path) does: decode and convert("RGB") like Pillow,
// resize to size x size with Pillow's bicubic, x rescale_factor in float64
// then float32, (x - mean) / std in float32. Thread-safe (no mutable state);
// runs on the preprocessing pool.
class ImagePreprocessor {
 public:
  using Limits = ImageLimits;

  ImagePreprocessor(const ImageSpec& spec, const Limits& limits)
      : spec_(spec), limits_(limits) {}

  // INVALID_ARGUMENT for empty, oversized, undecodable or too-large images;
  // messages start with `field` (e.g. "images[0].data").
  absl::StatusOr<PixelValues> Process(absl::string_view encoded,
                                      absl::string_view field) const;

  // The same steps after decoding (for callers that decoded already).
  PixelValues Normalize(const Rgb8Image& image) const;

 private:
  ImageSpec spec_;
  Limits limits_;
};

}  // namespace iblip::model
