// JPEG through libjpeg(-turbo) directly: its warnings tell a truncated or
// damaged scan apart from a benign oddity, which OpenCV's imdecode hides
// (it returns the partial image), and its header gives the size before the
// coefficient and sample buffers are allocated.
//
// libjpeg reports errors by calling back; the callbacks longjmp to the
// setjmp in ReadHeader or Decompress. Those two functions keep every piece
// of state in the caller's JpegDecoder (plain C structs) and write pixels
// through raw pointers: no destructor is skipped by the jump, and after it
// they only return false (their locals' values are not used).

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>

#include "model/runtime/image_codecs/codecs.h"

namespace iblip::model::image_codecs {
namespace {

// Progressive JPEGs may carry any number of scans, each a pass over the whole
// coefficient buffer; real encoders write about ten. libjpeg-turbo's tools
// suggest this cap against files made of thousands of tiny scans.
constexpr int kMaxScans = 500;

struct ErrorHandler {
  jpeg_error_mgr library;  // first: libjpeg holds a jpeg_error_mgr*
  jmp_buf jump;
  Refusal why;
  char detail[JMSG_LENGTH_MAX];
};

struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  ErrorHandler errors;
  jpeg_progress_mgr progress;
};

[[noreturn]] void Fail(j_common_ptr cinfo, Refusal why, const char* detail) {
  auto* errors = reinterpret_cast<ErrorHandler*>(cinfo->err);
  errors->why = why;
  if (detail != nullptr) {
    std::snprintf(errors->detail, sizeof(errors->detail), "%s", detail);
  } else {
    (*cinfo->err->format_message)(cinfo, errors->detail);
  }
  longjmp(errors->jump, 1);
}

void OnError(j_common_ptr cinfo) { Fail(cinfo, Refusal::kCorrupt, nullptr); }

// Warnings (level -1) that mean pixels are missing or wrong are errors: the
// data ended (libjpeg's memory source then inserts a fake end marker, the
// point where Pillow's suspending source reports "image file is truncated"),
// a scan ended early at a marker, or entropy-coded data was damaged (libjpeg
// fills zeros). Pillow ignores the last two; refusing them is deliberate.
// Other warnings (extra bytes between markers, odd APPn segments) are benign.
void OnMessage(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace output
  switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
      Fail(cinfo, Refusal::kTruncated, nullptr);
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
      Fail(cinfo, Refusal::kCorrupt, nullptr);
    default:
      return;
  }
}

void OnProgress(j_common_ptr cinfo) {
  if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number >
      kMaxScans) {
    Fail(cinfo, Refusal::kUnsupported, "more than 500 scans");
  }
}

// Creates the decompressor and reads the markers up to the first scan.
bool ReadHeader(JpegDecoder* d, const unsigned char* data, size_t size) {
  d->cinfo.err = jpeg_std_error(&d->errors.library);
  d->errors.library.error_exit = OnError;
  d->errors.library.emit_message = OnMessage;
  if (setjmp(d->errors.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  d->progress.progress_monitor = OnProgress;
  d->cinfo.progress = &d->progress;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  return true;
}

// Decodes every scanline into `rgb` (width x height x 3), through `row` for
// gray (1 byte a pixel) and CMYK (4) output.
bool Decompress(JpegDecoder* d, unsigned char* rgb, unsigned char* row) {
  if (setjmp(d->errors.jump)) return false;
  j_decompress_ptr cinfo = &d->cinfo;
  jpeg_start_decompress(cinfo);
  const JDIMENSION width = cinfo->output_width;
  while (cinfo->output_scanline < cinfo->output_height) {
    unsigned char* out =
        rgb + static_cast<size_t>(cinfo->output_scanline) * width * 3;
    JSAMPROW target = cinfo->out_color_space == JCS_RGB ? out : row;
    if (jpeg_read_scanlines(cinfo, &target, 1) != 1) {
      Fail(reinterpret_cast<j_common_ptr>(cinfo), Refusal::kTruncated,
           "no scanline");
    }
    if (cinfo->out_color_space == JCS_GRAYSCALE) {
      for (JDIMENSION x = 0; x < width; ++x)
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[x];
    } else if (cinfo->out_color_space == JCS_CMYK) {
      // libjpeg hands out CMYK as stored, which for Adobe files (and Pillow
      // assumes it for all) is inverted: Pillow's "CMYK;I" rawmode.
      for (JDIMENSION x = 0; x < width; ++x) {
        const unsigned char* in = row + 4 * x;
        const uint8_t cmyk[4] = {static_cast<uint8_t>(255 - in[0]),
                                 static_cast<uint8_t>(255 - in[1]),
                                 static_cast<uint8_t>(255 - in[2]),
                                 static_cast<uint8_t>(255 - in[3])};
        CmykToRgbLikePil(cmyk, out + 3 * x);
      }
    }
  }
  // No jpeg_finish_decompress: what follows the last scanline (the end
  // marker) is not needed, and Pillow does not require it either.
  return true;
}

// Destroys the decompressor however the decoding ended.
struct DecoderCloser {
  JpegDecoder* d;
  ~DecoderCloser() { jpeg_destroy_decompress(&d->cinfo); }
};

}  // namespace

absl::StatusOr<Rgb8Image> DecodeJpeg(absl::string_view encoded,
                                     const DecodeContext& context) {
  JpegDecoder d;
  std::memset(&d, 0, sizeof(d));
  DecoderCloser closer{&d};
  const auto* data = reinterpret_cast<const unsigned char*>(encoded.data());
  if (!ReadHeader(&d, data, encoded.size()))
    return Refuse(context, d.errors.why, d.errors.detail);

  jpeg_decompress_struct& cinfo = d.cinfo;
  if (absl::Status s =
          CheckPixelLimit(context, cinfo.image_width, cinfo.image_height);
      !s.ok()) {
    return s;
  }
  // Pillow's modes: 1 component is L, 3 are RGB, 4 are CMYK; others refused.
  size_t row_bytes_per_pixel = 0;
  switch (cinfo.num_components) {
    case 1:
      cinfo.out_color_space = JCS_GRAYSCALE;
      row_bytes_per_pixel = 1;
      break;
    case 3:
      cinfo.out_color_space = JCS_RGB;
      break;
    case 4:
      cinfo.out_color_space = JCS_CMYK;
      row_bytes_per_pixel = 4;
      break;
    default:
      return Refuse(context, Refusal::kUnsupported,
                    "a JPEG with " + std::to_string(cinfo.num_components) +
                        " components");
  }
  Rgb8Image image = NewRgb8Image(cinfo.image_width, cinfo.image_height);
  std::vector<unsigned char> row(cinfo.image_width * row_bytes_per_pixel);
  if (!Decompress(&d, image.pixels.data(), row.data()))
    return Refuse(context, d.errors.why, d.errors.detail);
  return image;
}

}  // namespace iblip::model::image_codecs
