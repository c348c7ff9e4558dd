#pragma once

// One decoder per accepted format, each producing Pillow's
// Image.open(...).convert("RGB") of the file's first image (see
// image_decoder.h for the dispatch and the contract they all keep: refuse
// truncated or corrupt data, check the pixel limit before allocating pixels,
// never return a partly decoded image).

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/image_codecs/codec_support.h"

namespace iblip::model::image_codecs {

absl::StatusOr<Rgb8Image> DecodeJpeg(absl::string_view encoded,
                                     const DecodeContext& context);
absl::StatusOr<Rgb8Image> DecodePng(absl::string_view encoded,
                                    const DecodeContext& context);
absl::StatusOr<Rgb8Image> DecodeGif(absl::string_view encoded,
                                    const DecodeContext& context);
absl::StatusOr<Rgb8Image> DecodeBmp(absl::string_view encoded,
                                    const DecodeContext& context);
absl::StatusOr<Rgb8Image> DecodeTiff(absl::string_view encoded,
                                     const DecodeContext& context);
absl::StatusOr<Rgb8Image> DecodeWebp(absl::string_view encoded,
                                     const DecodeContext& context);

}  // namespace iblip::model::image_codecs
