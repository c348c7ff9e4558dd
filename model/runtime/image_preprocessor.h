#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/package.h"

namespace iblip::model {

// An image ready for the vision encoder: [3, size, size] float32, RGB,
// rescaled and normalized, channel-major.
struct PixelValues {
  int size = 0;
  std::vector<float> chw;
};

// Turns encoded image bytes into PixelValues the way the package's processor
// does. Thread-safe (no mutable state); runs on the preprocessing pool.
class ImagePreprocessor {
 public:
  struct Limits {
    uint64_t max_image_bytes = 20ull << 20;
    uint64_t max_image_pixels = 50'000'000;
  };

  ImagePreprocessor(const ImageSpec& spec, const Limits& limits)
      : spec_(spec), limits_(limits) {}

  // INVALID_ARGUMENT for empty, oversized, undecodable or too-large images;
  // messages start with `field` (e.g. "images[0].data").
  absl::StatusOr<PixelValues> Process(absl::string_view encoded,
                                      absl::string_view field) const;

 private:
  ImageSpec spec_;
  Limits limits_;
};

}  // namespace iblip::model
