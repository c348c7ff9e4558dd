#include "model/runtime/image_decoder.h"

#include <gif_lib.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iblip::model {
namespace {

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | p[3];
}
uint32_t LittleEndian16(const unsigned char* p) {
  return p[0] | (uint32_t{p[1]} << 8);
}
uint32_t LittleEndian24(const unsigned char* p) {
  return LittleEndian16(p) | (uint32_t{p[2]} << 16);
}
uint32_t LittleEndian32(const unsigned char* p) {
  return LittleEndian16(p) | (LittleEndian16(p + 2) << 16);
}

bool StartsWith(absl::string_view data, absl::string_view prefix) {
  return data.size() >= prefix.size() &&
         data.substr(0, prefix.size()) == prefix;
}

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// --- GIF (OpenCV 4.6 has no GIF decoder) -----------------------------------

struct GifReader {
  absl::string_view data;
  size_t offset = 0;
};

int ReadGifBytes(GifFileType* gif, GifByteType* out, int length) {
  auto* reader = static_cast<GifReader*>(gif->UserData);
  const size_t n =
      std::min<size_t>(length, reader->data.size() - reader->offset);
  std::memcpy(out, reader->data.data() + reader->offset, n);
  reader->offset += n;
  return static_cast<int>(n);
}

// The first frame on the logical screen, through its palette. Outside the
// frame Pillow shows the background colour index.
absl::StatusOr<Rgb8Image> DecodeGif(absl::string_view encoded,
                                    absl::string_view field) {
  GifReader reader{encoded};
  int error = 0;
  GifFileType* gif = DGifOpen(&reader, ReadGifBytes, &error);
  if (gif == nullptr)
    return Invalid(field, "image could not be decoded (bad GIF header)");
  struct Closer {
    GifFileType* gif;
    ~Closer() { DGifCloseFile(gif, nullptr); }
  } closer{gif};
  if (DGifSlurp(gif) != GIF_OK && gif->ImageCount == 0) {
    return Invalid(field,
                   "image could not be decoded (truncated or corrupt GIF)");
  }
  if (gif->ImageCount < 1 || gif->SWidth <= 0 || gif->SHeight <= 0) {
    return Invalid(field, "image could not be decoded (GIF without frames)");
  }
  const SavedImage& frame = gif->SavedImages[0];
  const ColorMapObject* palette =
      frame.ImageDesc.ColorMap ? frame.ImageDesc.ColorMap : gif->SColorMap;
  if (palette == nullptr || frame.RasterBits == nullptr) {
    return Invalid(field, "image could not be decoded (GIF without a palette)");
  }
  Rgb8Image image{gif->SWidth, gif->SHeight,
                  std::vector<uint8_t>(static_cast<size_t>(gif->SWidth) *
                                       gif->SHeight * 3)};
  auto put = [&](int x, int y, int index) {
    const GifColorType color = index < palette->ColorCount
                                   ? palette->Colors[index]
                                   : GifColorType{0, 0, 0};
    uint8_t* p =
        image.pixels.data() + (static_cast<size_t>(y) * image.width + x) * 3;
    p[0] = color.Red;
    p[1] = color.Green;
    p[2] = color.Blue;
  };
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) put(x, y, gif->SBackGroundColor);
  }
  const GifImageDesc& d = frame.ImageDesc;
  for (int y = 0; y < d.Height; ++y) {
    for (int x = 0; x < d.Width; ++x) {
      const int sx = d.Left + x, sy = d.Top + y;
      if (sx < image.width && sy < image.height)
        put(sx, sy, frame.RasterBits[y * d.Width + x]);
    }
  }
  return image;
}

// --- Everything else, through OpenCV -----------------------------------------

// Pillow's 16-bit rules: I;16 gray converts to L by clipping at 255, and
// 16-bit RGB(A) PNGs are read as 8-bit by keeping the high byte.
uint8_t From16(uint16_t value, bool gray) {
  if (gray) return value >= 255 ? 255 : static_cast<uint8_t>(value);
  return static_cast<uint8_t>(value >> 8);
}

absl::StatusOr<Rgb8Image> ToRgb8(const cv::Mat& decoded,
                                 absl::string_view field) {
  const int channels = decoded.channels();
  const bool sixteen = decoded.depth() == CV_16U;
  if (decoded.depth() != CV_8U && !sixteen) {
    return Invalid(
        field, "image has an unsupported sample format (only 8- and 16-bit)");
  }
  if (channels < 1 || channels > 4)
    return Invalid(field, "image has an unsupported channel count");
  Rgb8Image image{decoded.cols, decoded.rows,
                  std::vector<uint8_t>(static_cast<size_t>(decoded.cols) *
                                       decoded.rows * 3)};
  const bool gray = channels <= 2;
  for (int y = 0; y < decoded.rows; ++y) {
    uint8_t* out =
        image.pixels.data() + static_cast<size_t>(y) * decoded.cols * 3;
    for (int x = 0; x < decoded.cols; ++x) {
      uint8_t sample[4];
      for (int c = 0; c < channels; ++c) {
        sample[c] =
            sixteen ? From16(decoded.ptr<uint16_t>(y)[x * channels + c], gray)
                    : decoded.ptr<uint8_t>(y)[x * channels + c];
      }
      if (gray) {  // L or LA: replicate, drop alpha
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = sample[0];
      } else {  // OpenCV is BGR(A): swap, drop alpha
        out[3 * x] = sample[2];
        out[3 * x + 1] = sample[1];
        out[3 * x + 2] = sample[0];
      }
    }
  }
  return image;
}

void LimitOpenCvDecoding(uint64_t max_pixels) {
  // OpenCV refuses images above this many pixels before allocating them
  // (a second line of defence behind PeekImageSize). Read once, at the first
  // decode, so it is set once per process.
  static std::once_flag once;
  std::call_once(once, [max_pixels] {
    setenv("OPENCV_IO_MAX_IMAGE_PIXELS", std::to_string(max_pixels).c_str(),
           /*overwrite=*/0);
  });
}

}  // namespace

absl::StatusOr<std::pair<uint32_t, uint32_t>> PeekImageSize(
    absl::string_view data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  if (StartsWith(data, "\x89PNG\r\n\x1a\n") && n >= 24)
    return std::make_pair(BigEndian32(p + 16), BigEndian32(p + 20));
  if ((StartsWith(data, "GIF87a") || StartsWith(data, "GIF89a")) && n >= 10) {
    return std::make_pair(LittleEndian16(p + 6), LittleEndian16(p + 8));
  }
  if (StartsWith(data, "BM") && n >= 26) {
    // Negative: a top-down bitmap. Its magnitude in unsigned arithmetic:
    // negating INT32_MIN as an int is undefined (a fuzzer found it).
    const uint32_t raw = LittleEndian32(p + 22);
    const bool top_down = static_cast<int32_t>(raw) < 0;
    return std::make_pair(LittleEndian32(p + 18), top_down ? 0u - raw : raw);
  }
  if (StartsWith(data, "RIFF") && n >= 30 && data.substr(8, 4) == "WEBP") {
    const absl::string_view chunk = data.substr(12, 4);
    if (chunk == "VP8 ")
      return std::make_pair(LittleEndian16(p + 26) & 0x3FFF,
                            LittleEndian16(p + 28) & 0x3FFF);
    if (chunk == "VP8L" && n >= 25) {
      const uint32_t bits = LittleEndian32(p + 21);
      return std::make_pair((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
    }
    if (chunk == "VP8X")
      return std::make_pair(LittleEndian24(p + 24) + 1,
                            LittleEndian24(p + 27) + 1);
  }
  if (StartsWith(data, "\xFF\xD8")) {  // JPEG: walk the markers to a SOFn
    size_t i = 2;
    while (i + 9 < n) {
      if (p[i] != 0xFF) return absl::NotFoundError("malformed JPEG marker");
      const unsigned char marker = p[i + 1];
      if (marker == 0xD8 || marker == 0x01 ||
          (marker >= 0xD0 && marker <= 0xD7) || marker == 0xFF) {
        i += marker == 0xFF ? 1 : 2;
        continue;
      }
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 &&
                       marker != 0xC8 && marker != 0xCC;
      if (sof)
        return std::make_pair((uint32_t{p[i + 7]} << 8) | p[i + 8],
                              (uint32_t{p[i + 5]} << 8) | p[i + 6]);
      i += 2 + ((size_t{p[i + 2]} << 8) | p[i + 3]);
    }
  }
  return absl::NotFoundError("image size not in a known header");
}

absl::StatusOr<Rgb8Image> DecodeImageAsPil(absl::string_view encoded,
                                           const ImageLimits& limits,
                                           absl::string_view field) {
  if (encoded.empty()) return Invalid(field, "image is empty");
  if (encoded.size() > limits.max_image_bytes) {
    return Invalid(field, absl::StrCat("image is ", encoded.size(),
                                       " bytes, more than the limit of ",
                                       limits.max_image_bytes));
  }
  if (auto size = PeekImageSize(encoded); size.ok()) {
    const uint64_t pixels = uint64_t{size->first} * size->second;
    if (pixels > limits.max_image_pixels) {
      return Invalid(
          field, absl::StrCat("image is ", size->first, "x", size->second,
                              " = ", pixels, " pixels, more than the limit of ",
                              limits.max_image_pixels));
    }
    if (pixels == 0) return Invalid(field, "image has no pixels");
  }
  if (StartsWith(encoded, "GIF8")) return DecodeGif(encoded, field);

  LimitOpenCvDecoding(limits.max_image_pixels);
  cv::Mat decoded;
  try {
    const cv::Mat raw(1, static_cast<int>(encoded.size()), CV_8UC1,
                      const_cast<char*>(encoded.data()));
    // UNCHANGED keeps gray, alpha and 16-bit samples for Pillow's rules, and
    // ignores EXIF orientation, as the reference does.
    decoded = cv::imdecode(raw, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return Invalid(field,
                   absl::StrCat("image could not be decoded (", e.err, ")"));
  }
  if (decoded.empty()) {
    return Invalid(field,
                   "image could not be decoded (not a JPEG, PNG, WebP, BMP, "
                   "TIFF or GIF file, or "
                   "truncated, or larger than the pixel limit)");
  }
  const uint64_t pixels = static_cast<uint64_t>(decoded.rows) * decoded.cols;
  if (pixels > limits.max_image_pixels) {
    return Invalid(
        field, absl::StrCat("image is ", decoded.cols, "x", decoded.rows, " = ",
                            pixels, " pixels, more than the limit of ",
                            limits.max_image_pixels));
  }
  return ToRgb8(decoded, field);
}

}  // namespace iblip::model
