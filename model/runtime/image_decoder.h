#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/pil_resize.h"

namespace iblip::model {

struct ImageLimits {
  uint64_t max_image_bytes = 20ull << 20;
  uint64_t max_image_pixels =
      50'000'000;  // width x height, checked before decoding
};

// Decodes JPEG, PNG (8/16-bit, gray, gray+alpha, palette, RGBA), WebP, BMP,
// TIFF and GIF (first frame) into 8-bit RGB exactly as Pillow's
// Image.open(...).convert("RGB") does: alpha is dropped (not composited),
// gray and palette expand to RGB, 16-bit gray clips to 255 and 16-bit color
// keeps the high byte, EXIF orientation is ignored. Thread-safe.
//
// INVALID_ARGUMENT for empty, oversized, truncated or undecodable input;
// messages start with `field`.
absl::StatusOr<Rgb8Image> DecodeImageAsPil(absl::string_view encoded,
                                           const ImageLimits& limits,
                                           absl::string_view field);

// Width and height from the file header alone, for formats whose header says
// so cheaply (PNG, GIF, BMP, JPEG, WebP); NOT_FOUND otherwise.
absl::StatusOr<std::pair<uint32_t, uint32_t>> PeekImageSize(
    absl::string_view encoded);

}  // namespace iblip::model
