// GIF through giflib's record-level API (not DGifSlurp, which decodes every
// frame and leaves a failed frame's buffer half written): the first frame's
// descriptor gives its size before any pixel buffer exists, and the frame is
// decoded into a canvas that was filled first, so no byte is ever
// uninitialised. giflib parses the container and hands over the frame's
// LZW sub-blocks; GifLzwDecoder decodes them by Pillow's rules.
//
// Pillow's rules for the first frame (GifImagePlugin, GifDecode.c):
// - the canvas is the logical screen, grown to hold the frame;
// - it starts as index 0, or as the transparency index when the frame has
//   one; the frame's indices are written as they are (transparency is not
//   applied to the first frame) and go through the frame's palette (local,
//   else global; indices past it are grey ramp values; no palette: grey);
// - LZW data is read in whole sub-blocks; the image is complete once its
//   last pixel is decoded, whatever follows (a missing block terminator or
//   trailer is fine, a missing pixel is "image file is truncated").

#include <gif_lib.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/runtime/image_codecs/codecs.h"
#include "model/runtime/image_codecs/gif_lzw.h"

namespace iblip::model::image_codecs {
namespace {

int ReadGif(GifFileType* gif, GifByteType* out, int length) {
  return static_cast<int>(static_cast<MemoryReader*>(gif->UserData)
                              ->Read(out, static_cast<size_t>(length)));
}

struct GifCloser {
  GifFileType* gif;
  ~GifCloser() { DGifCloseFile(gif, nullptr); }
};

}  // namespace

absl::StatusOr<Rgb8Image> DecodeGif(absl::string_view encoded,
                                    const DecodeContext& context) {
  MemoryReader source{encoded};
  auto failed = [&](int error) {
    const char* text = GifErrorString(error);
    return Refuse(context,
                  source.short_read ? Refusal::kTruncated : Refusal::kCorrupt,
                  text != nullptr ? text : "giflib error");
  };

  int error = 0;
  GifFileType* gif = DGifOpen(&source, ReadGif, &error);
  if (gif == nullptr) return failed(error);
  GifCloser closer{gif};

  // Records up to the first image; the last graphic control extension before
  // it may name a transparency index.
  int transparency = -1;
  for (bool at_image = false; !at_image;) {
    GifRecordType type;
    if (DGifGetRecordType(gif, &type) == GIF_ERROR) return failed(gif->Error);
    switch (type) {
      case IMAGE_DESC_RECORD_TYPE:
        if (DGifGetImageDesc(gif) == GIF_ERROR) return failed(gif->Error);
        at_image = true;
        break;
      case EXTENSION_RECORD_TYPE: {
        int code = 0;
        GifByteType* block = nullptr;
        if (DGifGetExtension(gif, &code, &block) == GIF_ERROR)
          return failed(gif->Error);
        if (code == GRAPHICS_EXT_FUNC_CODE) {
          // block[0] is the sub-block's length; Pillow fails on a short one.
          if (block == nullptr || block[0] < 4) {
            return Refuse(context, Refusal::kCorrupt,
                          "graphic control extension shorter than 4 bytes");
          }
          if (block[1] & 1) transparency = block[4];
        }
        while (block != nullptr) {
          if (DGifGetExtensionNext(gif, &block) == GIF_ERROR)
            return failed(gif->Error);
        }
        break;
      }
      default:  // TERMINATE_RECORD_TYPE: no image at all
        return Refuse(context, Refusal::kCorrupt, "no image in the file");
    }
  }

  const GifImageDesc& frame = gif->Image;
  if (frame.Width <= 0 || frame.Height <= 0 || frame.Left < 0 ||
      frame.Top < 0) {
    return Refuse(
        context, Refusal::kCorrupt,
        absl::StrCat("first frame is ", frame.Width, "x", frame.Height));
  }
  const uint64_t width = std::max<uint64_t>(gif->SWidth > 0 ? gif->SWidth : 0,
                                            uint64_t(frame.Left) + frame.Width);
  const uint64_t height = std::max<uint64_t>(
      gif->SHeight > 0 ? gif->SHeight : 0, uint64_t(frame.Top) + frame.Height);
  if (absl::Status s = CheckPixelLimit(context, width, height); !s.ok())
    return s;

  std::vector<uint8_t> indices(
      width * height,
      static_cast<uint8_t>(transparency >= 0 ? transparency : 0));
  int min_code_size = 0;
  GifByteType* block = nullptr;
  if (DGifGetCode(gif, &min_code_size, &block) == GIF_ERROR)
    return failed(gif->Error);
  GifLzwDecoder lzw(min_code_size, frame.Width, frame.Height, frame.Interlace,
                    indices.data() + frame.Top * width + frame.Left, width);
  auto status = GifLzwDecoder::Status::kNeedMore;
  // A sub-block cut short by the end of the data fails in giflib and is not
  // used: Pillow uses whole sub-blocks only.
  while (block != nullptr && status == GifLzwDecoder::Status::kNeedMore) {
    status = lzw.Feed(block + 1, block[0]);
    if (status == GifLzwDecoder::Status::kNeedMore &&
        DGifGetCodeNext(gif, &block) == GIF_ERROR) {
      break;
    }
  }
  if (status == GifLzwDecoder::Status::kBroken)
    return Refuse(context, Refusal::kCorrupt, lzw.error());
  if (status != GifLzwDecoder::Status::kComplete)
    return Refuse(context, Refusal::kTruncated, "pixels missing");

  PilPalette palette;
  const ColorMapObject* colors =
      frame.ColorMap != nullptr ? frame.ColorMap : gif->SColorMap;
  if (colors != nullptr) {
    for (int i = 0; i < colors->ColorCount && i < 256; ++i) {
      const GifColorType& c = colors->Colors[i];
      palette.Set(i, c.Red, c.Green, c.Blue);
    }
  }
  Rgb8Image image = NewRgb8Image(width, height);
  for (size_t i = 0; i < indices.size(); ++i)
    std::memcpy(&image.pixels[3 * i], palette[indices[i]], 3);
  return image;
}

}  // namespace iblip::model::image_codecs
