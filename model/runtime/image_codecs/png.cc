// PNG through libpng directly, in its progressive ("push") mode: the whole
// file is handed over at once and rows come back as their data is complete.
// That gives Pillow's rule for where the data may end: an image is whole
// when its last row was decoded, whether or not IEND (or the rest of the
// last IDAT) follows. The size is checked in the header callback, before any
// row buffer exists.
//
// libpng reports errors by longjmp to the setjmp in Run. Run has no locals
// of its own and the callbacks hold no object with a destructor when they
// raise an error, so the jump skips no destructor; all state lives in the
// caller's PngDecoder, reached through a pointer.

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "model/runtime/image_codecs/codecs.h"

namespace iblip::model::image_codecs {
namespace {

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const DecodeContext* context = nullptr;
  absl::Status size_status;  // set (not ok) when the header is refused
  // The header, as read in OnHeader.
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  bool interlaced = false;
  // Rows as libpng hands them out (after png_set_packing), row-major; owned
  // by DecodePng, allocated in OnHeader.
  std::vector<unsigned char>* raw = nullptr;
  size_t row_bytes = 0;
  bool complete = false;  // the last row of the last pass was delivered
  char message[200] = {};
};

PngDecoder* DecoderOf(png_structp png) {
  return static_cast<PngDecoder*>(png_get_progressive_ptr(png));
}

void OnError(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof(d->message), "%s", message);
  png_longjmp(png, 1);
}

// Warnings leave the image intact: a missing row is caught by `complete`.
void OnWarning(png_structp, png_const_charp) {}

void OnHeader(png_structp png, png_infop info) {
  PngDecoder* d = DecoderOf(png);
  int interlace = 0;
  png_get_IHDR(png, info, &d->width, &d->height, &d->bit_depth, &d->color_type,
               &interlace, nullptr, nullptr);
  d->size_status = CheckPixelLimit(*d->context, d->width, d->height);
  if (!d->size_status.ok()) png_error(png, "over the pixel limit");
  d->interlaced = interlace != PNG_INTERLACE_NONE;
  // Samples below 8 bits become one byte each, unscaled (palette indices
  // stay indices; gray is scaled as Pillow does, in ToRgb). Nothing else is
  // transformed: no gamma, no tRNS expansion, 16-bit samples stay 16-bit.
  if (d->bit_depth < 8) png_set_packing(png);
  if (d->interlaced) png_set_interlace_handling(png);
  png_read_update_info(png, info);
  d->row_bytes = png_get_rowbytes(png, info);
  bool allocated = true;
  try {
    d->raw->assign(d->row_bytes * d->height, 0);
  } catch (const std::bad_alloc&) {
    allocated = false;
  }
  if (!allocated) png_error(png, "out of memory");  // not from inside catch
}

void OnRow(png_structp png, png_bytep row, png_uint_32 row_number, int pass) {
  PngDecoder* d = DecoderOf(png);
  if (row_number >= d->height) return;
  if (row != nullptr) {
    png_progressive_combine_row(png, d->raw->data() + row_number * d->row_bytes,
                                row);
  }
  // With interlace handling libpng calls back for every image row in every
  // pass, so the last call is (height - 1, pass 6).
  if (row_number == d->height - 1 && pass == (d->interlaced ? 6 : 0))
    d->complete = true;
}

bool Run(PngDecoder* d, const unsigned char* data, size_t size) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  png_process_data(d->png, d->info, const_cast<unsigned char*>(data), size);
  return true;
}

// Pillow's modes for each PNG colour type and depth, then convert("RGB"):
// 16-bit gray is "I" (clipped to 255), other 16-bit samples keep their high
// byte, gray below 8 bits is scaled to 0..255, palettes index a PilPalette,
// alpha is dropped.
void ToRgb(const PngDecoder& d, const PilPalette& palette, Rgb8Image* image) {
  const bool sixteen = d.bit_depth == 16;
  const int channels = d.color_type == PNG_COLOR_TYPE_GRAY         ? 1
                       : d.color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                       : d.color_type == PNG_COLOR_TYPE_RGB        ? 3
                       : d.color_type == PNG_COLOR_TYPE_RGB_ALPHA  ? 4
                                                                   : 1;
  const int step = channels * (sixteen ? 2 : 1);
  const int gray_scale = d.bit_depth < 8 ? 255 / ((1 << d.bit_depth) - 1) : 1;
  for (png_uint_32 y = 0; y < d.height; ++y) {
    const unsigned char* in = d.raw->data() + y * d.row_bytes;
    uint8_t* out = image->pixels.data() + static_cast<size_t>(y) * d.width * 3;
    for (png_uint_32 x = 0; x < d.width; ++x, in += step, out += 3) {
      uint8_t r, g, b;
      if (d.color_type == PNG_COLOR_TYPE_PALETTE) {
        const uint8_t* rgb = palette[in[0]];
        r = rgb[0], g = rgb[1], b = rgb[2];
      } else if (channels <= 2) {
        const int value = sixteen ? (in[0] << 8 | in[1]) : in[0] * gray_scale;
        // 16-bit gray+alpha is read as "LA;16B" (high byte), 16-bit gray as
        // "I" (clipped).
        r = g = b = static_cast<uint8_t>(!sixteen        ? value
                                         : channels == 2 ? in[0]
                                         : value > 255   ? 255
                                                         : value);
      } else {
        r = in[0], g = in[sixteen ? 2 : 1], b = in[sixteen ? 4 : 2];
      }
      out[0] = r, out[1] = g, out[2] = b;
    }
  }
}

struct DecoderCloser {
  PngDecoder* d;
  ~DecoderCloser() {
    png_destroy_read_struct(&d->png, d->info ? &d->info : nullptr, nullptr);
  }
};

}  // namespace

absl::StatusOr<Rgb8Image> DecodePng(absl::string_view encoded,
                                    const DecodeContext& context) {
  // libpng would wait for the rest of whatever chunk comes first; a file
  // whose first chunk is not the header is damaged, not cut short.
  if (encoded.size() >= 16 && encoded.substr(12, 4) != "IHDR")
    return Refuse(context, Refusal::kCorrupt, "the first chunk is not IHDR");
  std::vector<unsigned char> raw;
  PngDecoder d;
  d.context = &context;
  d.raw = &raw;
  d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d, OnError, OnWarning);
  if (d.png == nullptr) return absl::ResourceExhaustedError("libpng");
  DecoderCloser closer{&d};
  d.info = png_create_info_struct(d.png);
  if (d.info == nullptr) return absl::ResourceExhaustedError("libpng");
  // Pillow checks the CRC of every chunk before the image data and refuses a
  // mismatch, ancillary chunks included (libpng would only warn for those).
  png_set_crc_action(d.png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
  // libpng's own default caps (1e6 per side) are below what Pillow opens;
  // the pixel limit is the cap.
  png_set_user_limits(d.png, 0x7fffffff, 0x7fffffff);
  png_set_progressive_read_fn(d.png, &d, OnHeader, OnRow, nullptr);

  const bool finished =
      Run(&d, reinterpret_cast<const unsigned char*>(encoded.data()),
          encoded.size());
  if (!d.size_status.ok()) return d.size_status;
  // An error after the last row (a damaged chunk after the image data) is
  // outside the image, as for Pillow, which stops reading there.
  if (!d.complete) {
    if (!finished) return Refuse(context, Refusal::kCorrupt, d.message);
    return Refuse(context, Refusal::kTruncated,
                  d.raw->empty() ? "no image data" : "image data ends early");
  }
  PilPalette palette;
  if (d.color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp entries = nullptr;
    int count = 0;
    if (png_get_PLTE(d.png, d.info, &entries, &count) & PNG_INFO_PLTE) {
      for (int i = 0; i < count && i < 256; ++i)
        palette.Set(i, entries[i].red, entries[i].green, entries[i].blue);
    }
  }
  Rgb8Image image = NewRgb8Image(d.width, d.height);
  ToRgb(d, palette, &image);
  return image;
}

}  // namespace iblip::model::image_codecs
