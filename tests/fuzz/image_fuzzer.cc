// Fuzz target: encoded image bytes -> pixel values, as every request's image
// is processed. A success must give size x size x 3 finite values.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "model/runtime/image_preprocessor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const iblip::model::ImagePreprocessor* preprocessor = [] {
    iblip::model::ImageSpec spec;
    spec.size =
        32;  // small output keeps executions fast; resize logic is the same
    spec.mean = {0.48f, 0.46f, 0.41f};
    spec.std = {0.27f, 0.26f, 0.28f};
    iblip::model::ImageLimits limits;
    limits.max_image_bytes = 1 << 20;
    limits.max_image_pixels =
        1 << 20;  // larger claims must be refused before decoding
    return new iblip::model::ImagePreprocessor(spec, limits);
  }();
  auto pixels = preprocessor->Process(
      {reinterpret_cast<const char*>(data), size}, "images[0].data");
  if (!pixels.ok()) return 0;
  if (pixels->size != 32 || pixels->chw.size() != 3u * 32 * 32)
    __builtin_trap();
  for (float v : pixels->chw) {
    if (!std::isfinite(v)) __builtin_trap();
  }
  return 0;
}
