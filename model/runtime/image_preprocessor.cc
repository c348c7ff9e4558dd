#include "model/runtime/image_preprocessor.h"

#include "model/runtime/pil_resize.h"

namespace iblip::model {

absl::StatusOr<PixelValues> ImagePreprocessor::Process(
    absl::string_view encoded, absl::string_view field) const {
  auto image = DecodeImageAsPil(encoded, limits_, field);
  if (!image.ok()) return image.status();
  return Normalize(*image);
}

PixelValues ImagePreprocessor::Normalize(const Rgb8Image& image) const {
  const Rgb8Image resized = ResizeBicubicLikePil(image, spec_.size, spec_.size);
  PixelValues out;
  out.size = spec_.size;
  const size_t plane = static_cast<size_t>(spec_.size) * spec_.size;
  out.chw.resize(3 * plane);
  // Hugging Face: rescale in float64, cast to float32, normalize in float32.
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const auto rescaled =
          static_cast<float>(static_cast<double>(v) * spec_.rescale_factor);
      table[c][v] = (rescaled - spec_.mean[c]) / spec_.std[c];
    }
  }
  for (size_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c)
      out.chw[c * plane + i] = table[c][resized.pixels[3 * i + c]];
  }
  return out;
}

}  // namespace iblip::model
