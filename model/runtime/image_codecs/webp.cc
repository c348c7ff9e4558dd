// WebP through libwebp's animation decoder, as Pillow (with WebP animation
// support, as Debian builds it) reads every WebP: the first frame rendered on
// the canvas, RGBA without premultiplication, alpha then dropped. The
// canvas size comes from WebPGetFeatures (the VP8X or bitstream header)
// before the decoder allocates the canvas; the demuxer refuses data shorter
// than its chunks say, so a truncated file never decodes.

#include <webp/decode.h>
#include <webp/demux.h>

#include <memory>

#include "model/runtime/image_codecs/codecs.h"

namespace iblip::model::image_codecs {
namespace {

const char* Describe(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY:
      return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
      return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
      return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
      return "suspended";
    case VP8_STATUS_USER_ABORT:
      return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return "not enough data";
    default:
      return "error";
  }
}

struct AnimDecoderDeleter {
  void operator()(WebPAnimDecoder* d) const { WebPAnimDecoderDelete(d); }
};

}  // namespace

absl::StatusOr<Rgb8Image> DecodeWebp(absl::string_view encoded,
                                     const DecodeContext& context) {
  WebPData data;
  data.bytes = reinterpret_cast<const uint8_t*>(encoded.data());
  data.size = encoded.size();
  WebPBitstreamFeatures features;
  const VP8StatusCode status =
      WebPGetFeatures(data.bytes, data.size, &features);
  if (status != VP8_STATUS_OK) {
    return Refuse(context,
                  status == VP8_STATUS_NOT_ENOUGH_DATA ? Refusal::kTruncated
                                                       : Refusal::kCorrupt,
                  Describe(status));
  }
  if (absl::Status s =
          CheckPixelLimit(context, features.width, features.height);
      !s.ok()) {
    return s;
  }
  WebPAnimDecoderOptions options;
  if (!WebPAnimDecoderOptionsInit(&options))
    return absl::InternalError("libwebp: bad ABI version");
  options.color_mode = MODE_RGBA;
  options.use_threads = 0;
  std::unique_ptr<WebPAnimDecoder, AnimDecoderDeleter> decoder(
      WebPAnimDecoderNew(&data, &options));
  if (decoder == nullptr) {
    // The demuxer refuses chunks that run past the data or past the RIFF
    // size; which of the two it was, the RIFF size says.
    const uint32_t riff_size =
        data.size >= 8
            ? (uint32_t{data.bytes[4]} | uint32_t{data.bytes[5]} << 8 |
               uint32_t{data.bytes[6]} << 16 | uint32_t{data.bytes[7]} << 24)
            : 0;
    const bool cut = uint64_t{riff_size} + 8 > data.size;
    return Refuse(context, cut ? Refusal::kTruncated : Refusal::kCorrupt,
                  cut ? "shorter than its RIFF size" : "malformed chunks");
  }
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(decoder.get(), &info) ||
      info.canvas_width != static_cast<uint32_t>(features.width) ||
      info.canvas_height != static_cast<uint32_t>(features.height)) {
    return Refuse(context, Refusal::kCorrupt, "canvas size");
  }
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(decoder.get(), &rgba, &timestamp))
    return Refuse(context, Refusal::kCorrupt, "first frame does not decode");
  Rgb8Image image = NewRgb8Image(info.canvas_width, info.canvas_height);
  const size_t pixels = size_t{info.canvas_width} * info.canvas_height;
  for (size_t i = 0; i < pixels; ++i) {
    image.pixels[3 * i] = rgba[4 * i];
    image.pixels[3 * i + 1] = rgba[4 * i + 1];
    image.pixels[3 * i + 2] = rgba[4 * i + 2];
  }
  return image;
}

}  // namespace iblip::model::image_codecs
