#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/pil_resize.h"

namespace iblip::model {

struct ImageLimits {
  uint64_t max_image_bytes = 20ull << 20;
  // width x height, checked against the file's header (for GIF, the first
  // frame on its logical screen) before any pixel buffer is allocated.
  uint64_t max_image_pixels = 50'000'000;
};

// Decodes the first image of a JPEG, PNG, GIF, BMP, TIFF or WebP file into
// 8-bit RGB exactly as Pillow 9.4's Image.open(...).convert("RGB") does (the
// reference processor's first step): alpha is dropped (not composited), gray
// and palettes expand to RGB, 16-bit gray clips to 255 and other 16-bit
// samples keep their high byte, CMYK converts with Pillow's formula, EXIF
// orientation is ignored. Each format goes to its own library (libjpeg,
// libpng, giflib, libtiff, libwebp; BMP is read here), see image_codecs/.
// Thread-safe.
//
// INVALID_ARGUMENT, with a message that starts with `field` and says why,
// for: empty or oversized input, another format, an image over the pixel
// limit (refused from its header), data that ends before the image does
// (Pillow's "image file is truncated"), data the decoder finds damaged (a
// stricter rule than Pillow's for JPEG entropy data and PNG image-data CRCs,
// which Pillow does not check), and variants Pillow reads but this decoder
// does not (rare TIFF and BMP layouts). A partly decoded image is never
// returned, and every returned byte was written by the decoder.
absl::StatusOr<Rgb8Image> DecodeImageAsPil(absl::string_view encoded,
                                           const ImageLimits& limits,
                                           absl::string_view field);

// The formats DecodeImageAsPil accepts, by name, in the order its messages
// list them: JPEG, PNG, GIF, BMP, TIFF, WebP.
const std::vector<std::string>& AcceptedImageFormats();

}  // namespace iblip::model
