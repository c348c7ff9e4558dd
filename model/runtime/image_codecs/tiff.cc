// TIFF through libtiff directly (Pillow uses libtiff too, for every
// compressed TIFF): the first directory gives width, height and the strip or
// tile geometry before any pixel buffer is allocated (OpenCV's reader checks
// sizes only against a process-wide limit read once, at load time), and the
// per-handle error and warning callbacks (libtiff 4.5) tell us when a strip
// is short or damaged. Layouts follow Pillow's OPEN_INFO table (8-bit RGB,
// RGBA, CMYK, gray of 1-16 bits, palettes, JPEG-compressed YCbCr), then
// convert("RGB"); other layouts are refused as unsupported. Unlike for the
// other formats, Pillow 9.4 applies a TIFF's Orientation tag, and so do we.

#include <tiffio.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/runtime/image_codecs/codecs.h"

namespace iblip::model::image_codecs {
namespace {

// --- The data as a libtiff "file" --------------------------------------------

struct TiffSource {
  MemoryReader reader;
  // The first error, or a warning while pixels were being decoded (a codec's
  // warning there means missing or damaged data: refused).
  bool decoding = false;
  bool failed = false;
  char message[256] = {};
};

TiffSource* SourceOf(thandle_t handle) {
  return static_cast<TiffSource*>(handle);
}

tmsize_t ReadTiff(thandle_t handle, void* out, tmsize_t size) {
  if (size <= 0) return 0;
  return static_cast<tmsize_t>(
      SourceOf(handle)->reader.Read(out, static_cast<size_t>(size)));
}

tmsize_t WriteTiff(thandle_t, void*, tmsize_t) { return 0; }

toff_t SeekTiff(thandle_t handle, toff_t offset, int whence) {
  MemoryReader& r = SourceOf(handle)->reader;
  const uint64_t base = whence == SEEK_CUR   ? r.offset
                        : whence == SEEK_END ? r.data.size()
                                             : 0;
  if (offset > UINT64_MAX - base) return static_cast<toff_t>(-1);
  r.offset = base + offset;  // past the end is allowed; reads return 0
  return r.offset;
}

int CloseTiff(thandle_t) { return 0; }
toff_t SizeTiff(thandle_t handle) {
  return SourceOf(handle)->reader.data.size();
}
int MapTiff(thandle_t, void**, toff_t*) { return 0; }
void UnmapTiff(thandle_t, void*, toff_t) {}

void Record(TiffSource* s, const char* module, const char* format,
            va_list args) {
  if (s->failed) return;
  s->failed = true;
  int used = std::snprintf(s->message, sizeof(s->message),
                           "%s: ", module != nullptr ? module : "libtiff");
  if (used < 0 || used >= static_cast<int>(sizeof(s->message))) used = 0;
  std::vsnprintf(s->message + used, sizeof(s->message) - used, format, args);
}

int OnTiffError(TIFF*, void* user, const char* module, const char* format,
                va_list args) {
  Record(static_cast<TiffSource*>(user), module, format, args);
  return 1;  // handled: libtiff's global handler does not print it
}

// While decoding pixels, a warning means a strip was short or damaged. While
// reading the directory most warnings are benign (unknown tags, unterminated
// strings), but a tag libtiff had to drop or a required one it had to guess
// (Photometric, SamplesPerPixel) leaves a different image than Pillow's own
// directory parser would: those refuse the file as corrupt.
int OnTiffWarning(TIFF*, void* user, const char* module, const char* format,
                  va_list args) {
  auto* s = static_cast<TiffSource*>(user);
  if (s->decoding) {
    Record(s, module, format, args);
    return 1;
  }
  char text[256];
  va_list copy;
  va_copy(copy, args);
  std::vsnprintf(text, sizeof(text), format, copy);
  va_end(copy);
  if (std::strstr(text, "ignor") || std::strstr(text, "missing") ||
      std::strstr(text, "Photometric")) {
    Record(s, module, format, args);
  }
  return 1;
}

struct TiffCloser {
  void operator()(TIFF* tif) const { TIFFClose(tif); }
};
struct OptionsFree {
  void operator()(TIFFOpenOptions* o) const { TIFFOpenOptionsFree(o); }
};

// --- Layouts (Pillow's OPEN_INFO)
// -----------------------------------------------

enum class Kind { kGray, kRgb, kPalette, kCmyk };

struct Layout {
  Kind kind = Kind::kGray;
  int bits = 8;           // per sample
  int samples = 1;        // per pixel, extra samples included
  bool separate = false;  // one plane per sample
  bool min_is_white = false;
  bool premultiplied = false;  // RGB with associated alpha ("RGBa")
};

absl::StatusOr<Layout> ReadLayout(TIFF* tif, const DecodeContext& context) {
  uint16_t bits = 1, samples = 1, photometric = 0, planar = PLANARCONFIG_CONTIG,
           sample_format = SAMPLEFORMAT_UINT, compression = COMPRESSION_NONE;
  uint16_t extra_count = 0;
  uint16_t* extra = nullptr;
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &samples);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &sample_format);
  TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
  TIFFGetFieldDefaulted(tif, TIFFTAG_EXTRASAMPLES, &extra_count, &extra);
  TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric);

  Layout layout;
  layout.bits = bits;
  layout.samples = samples;
  layout.separate = planar == PLANARCONFIG_SEPARATE && samples > 1;
  const int colors = samples - extra_count;
  // Extra samples Pillow names: the first may be alpha (2), premultiplied
  // alpha (1) or unspecified (0); further ones unspecified.
  bool extras_ok = extra_count == 0 || extra != nullptr;
  for (int i = 1; extras_ok && i < extra_count; ++i) extras_ok = extra[i] == 0;
  const int first_extra = extra_count > 0 && extra != nullptr ? extra[0] : -1;
  auto unsupported = [&] {
    return Refuse(context, Refusal::kUnsupported,
                  absl::StrCat("photometric ", photometric, ", ", samples,
                               " samples of ", bits, " bits, ", extra_count,
                               " extra, sample format ", sample_format));
  };
  if (sample_format != SAMPLEFORMAT_UINT || !extras_ok) return unsupported();

  switch (photometric) {
    case PHOTOMETRIC_MINISWHITE:
    case PHOTOMETRIC_MINISBLACK:
      layout.kind = Kind::kGray;
      layout.min_is_white = photometric == PHOTOMETRIC_MINISWHITE;
      if (samples == 1 && (bits == 1 || bits == 2 || bits == 4 || bits == 8))
        return layout;
      // I;16 (clipped by convert), black-is-zero only.
      if (samples == 1 && bits == 16 && !layout.min_is_white) return layout;
      // LA: gray and alpha.
      if (samples == 2 && bits == 8 && !layout.min_is_white &&
          first_extra == EXTRASAMPLE_UNASSALPHA)
        return layout;
      return unsupported();
    case PHOTOMETRIC_RGB:
      layout.kind = Kind::kRgb;
      if (bits == 8 && samples == 3 && extra_count == 0) return layout;
      if (bits == 8 && samples == 4 && extra_count == 0) return layout;
      if (bits == 8 && samples >= 4 && samples <= 6 && colors == 3 &&
          (first_extra <= EXTRASAMPLE_UNASSALPHA ||
           (first_extra == 999 && samples == 4))) {
        layout.premultiplied = first_extra == EXTRASAMPLE_ASSOCALPHA;
        return layout;
      }
      if (bits == 16 && (samples == 3 || samples == 4) &&
          (extra_count == 0 || (samples == 4 && colors == 3 &&
                                first_extra != EXTRASAMPLE_ASSOCALPHA)))
        return layout;
      return unsupported();
    case PHOTOMETRIC_PALETTE:
      layout.kind = Kind::kPalette;
      if (samples == 1 && (bits == 1 || bits == 2 || bits == 4 || bits == 8))
        return layout;
      if (samples == 2 && bits == 8 && first_extra == EXTRASAMPLE_UNASSALPHA)
        return layout;
      return unsupported();
    case PHOTOMETRIC_SEPARATED:
      layout.kind = Kind::kCmyk;
      if (bits == 8 && samples >= 4 && samples <= 6 && colors == 4 &&
          (extra_count == 0 || first_extra == EXTRASAMPLE_UNSPECIFIED))
        return layout;
      return unsupported();
    case PHOTOMETRIC_YCBCR:
      // Pillow reads JPEG-compressed YCbCr through libjpeg's RGB output.
      if (bits == 8 && samples == 3 && compression == COMPRESSION_JPEG &&
          !layout.separate &&
          TIFFSetField(tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB)) {
        layout.kind = Kind::kRgb;
        return layout;
      }
      return unsupported();
    default:
      return unsupported();
  }
}

// --- Samples to RGB
// --------------------------------------------------------------

// Sample `index` of a row of `bits`-bit samples (MSB first below 8 bits;
// libtiff has already put 16-bit samples in host order).
unsigned Sample(const uint8_t* row, uint64_t index, int bits) {
  switch (bits) {
    case 8:
      return row[index];
    case 16: {
      uint16_t v;
      std::memcpy(&v, row + 2 * index, 2);
      return v;
    }
    default: {
      const uint64_t bit = index * bits;
      return (row[bit / 8] >> (8 - bits - bit % 8)) & ((1u << bits) - 1);
    }
  }
}

uint8_t Unpremultiply(unsigned value, unsigned alpha) {
  if (alpha == 255) return static_cast<uint8_t>(value);
  const unsigned v = value * 255 / alpha;
  return static_cast<uint8_t>(v > 255 ? 255 : v);
}

// The samples of pixel x: `rows[c]` is sample c's row in separate planes,
// rows[0] holds them all interleaved otherwise.
void ConvertPixel(const Layout& layout, const PilPalette& palette,
                  const uint8_t* const* rows, uint64_t x, uint8_t* out) {
  auto sample = [&](int c) {
    return layout.separate
               ? Sample(rows[c], x, layout.bits)
               : Sample(rows[0], x * layout.samples + c, layout.bits);
  };
  switch (layout.kind) {
    case Kind::kGray: {
      unsigned v = sample(0);
      if (layout.bits < 8) v = v * 255 / ((1u << layout.bits) - 1);
      if (layout.bits == 16) v = std::min(v, 255u);
      if (layout.min_is_white) v = 255 - v;
      out[0] = out[1] = out[2] = static_cast<uint8_t>(v);
      return;
    }
    case Kind::kRgb:
      if (layout.bits == 16) {
        for (int c = 0; c < 3; ++c)
          out[c] = static_cast<uint8_t>(sample(c) >> 8);
      } else if (layout.premultiplied) {
        const unsigned alpha = sample(3);
        for (int c = 0; c < 3; ++c)
          out[c] = alpha == 0 ? 0 : Unpremultiply(sample(c), alpha);
      } else {
        for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>(sample(c));
      }
      return;
    case Kind::kPalette:
      std::memcpy(out, palette[sample(0)], 3);
      return;
    case Kind::kCmyk: {
      const uint8_t cmyk[4] = {
          static_cast<uint8_t>(sample(0)), static_cast<uint8_t>(sample(1)),
          static_cast<uint8_t>(sample(2)), static_cast<uint8_t>(sample(3))};
      CmykToRgbLikePil(cmyk, out);
      return;
    }
  }
}

// --- Reading strips and tiles
// ----------------------------------------------------

class PixelReader {
 public:
  PixelReader(TIFF* tif, TiffSource* source, const Layout& layout,
              const PilPalette& palette, Rgb8Image* image,
              const DecodeContext& context)
      : tif_(tif),
        source_(source),
        layout_(layout),
        palette_(palette),
        image_(image),
        context_(context),
        planes_(layout.separate ? layout.samples : 1),
        samples_per_plane_(layout.separate ? 1 : layout.samples) {}

  absl::Status ReadStrips() {
    uint32_t rows_per_strip = 0;
    TIFFGetFieldDefaulted(tif_, TIFFTAG_ROWSPERSTRIP, &rows_per_strip);
    const uint64_t height = image_->height;
    rows_per_strip = static_cast<uint32_t>(std::min<uint64_t>(
        rows_per_strip == 0 ? height : rows_per_strip, height));
    const uint32_t strips =
        static_cast<uint32_t>((height + rows_per_strip - 1) / rows_per_strip);
    if (TIFFNumberOfStrips(tif_) < strips * planes_)
      return Corrupt("fewer strips than rows");
    const uint64_t row_bytes = PlaneRowBytes(image_->width);
    std::vector<std::vector<uint8_t>> buffers(planes_);
    for (uint32_t strip = 0; strip < strips; ++strip) {
      const uint32_t first_row = strip * rows_per_strip;
      const uint32_t rows = static_cast<uint32_t>(
          std::min<uint64_t>(rows_per_strip, height - first_row));
      for (int plane = 0; plane < planes_; ++plane) {
        const uint32_t index = strip + static_cast<uint32_t>(plane) * strips;
        if (absl::Status s = CheckListed(index); !s.ok()) return s;
        buffers[plane].assign(row_bytes * rows, 0);
        const tmsize_t got =
            TIFFReadEncodedStrip(tif_, index, buffers[plane].data(),
                                 static_cast<tmsize_t>(buffers[plane].size()));
        if (absl::Status s = CheckRead(got, buffers[plane].size()); !s.ok())
          return s;
      }
      for (uint32_t r = 0; r < rows; ++r) {
        const uint8_t* rows_in[6];
        for (int plane = 0; plane < planes_; ++plane)
          rows_in[plane] = buffers[plane].data() + r * row_bytes;
        uint8_t* out = image_->pixels.data() +
                       (uint64_t{first_row} + r) * image_->width * 3;
        for (int x = 0; x < image_->width; ++x, out += 3)
          ConvertPixel(layout_, palette_, rows_in, x, out);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReadTiles() {
    uint32_t tile_width = 0, tile_height = 0;
    TIFFGetField(tif_, TIFFTAG_TILEWIDTH, &tile_width);
    TIFFGetField(tif_, TIFFTAG_TILELENGTH, &tile_height);
    if (tile_width == 0 || tile_height == 0 ||
        uint64_t{tile_width} * tile_height > context_.limits.max_image_pixels)
      return Corrupt(absl::StrCat("tiles of ", tile_width, "x", tile_height));
    const uint64_t row_bytes = PlaneRowBytes(tile_width);
    std::vector<std::vector<uint8_t>> buffers(planes_);
    for (uint32_t y0 = 0; y0 < static_cast<uint32_t>(image_->height);
         y0 += tile_height) {
      for (uint32_t x0 = 0; x0 < static_cast<uint32_t>(image_->width);
           x0 += tile_width) {
        for (int plane = 0; plane < planes_; ++plane) {
          buffers[plane].assign(row_bytes * tile_height, 0);
          const ttile_t tile =
              TIFFComputeTile(tif_, x0, y0, 0, static_cast<uint16_t>(plane));
          if (absl::Status s = CheckListed(tile); !s.ok()) return s;
          const tmsize_t got =
              TIFFReadEncodedTile(tif_, tile, buffers[plane].data(),
                                  static_cast<tmsize_t>(buffers[plane].size()));
          if (absl::Status s = CheckRead(got, buffers[plane].size()); !s.ok())
            return s;
        }
        const uint32_t rows = std::min<uint32_t>(
            tile_height, static_cast<uint32_t>(image_->height) - y0);
        const uint32_t columns = std::min<uint32_t>(
            tile_width, static_cast<uint32_t>(image_->width) - x0);
        for (uint32_t r = 0; r < rows; ++r) {
          const uint8_t* rows_in[6];
          for (int plane = 0; plane < planes_; ++plane)
            rows_in[plane] = buffers[plane].data() + r * row_bytes;
          uint8_t* out = image_->pixels.data() +
                         ((uint64_t{y0} + r) * image_->width + x0) * 3;
          for (uint32_t x = 0; x < columns; ++x, out += 3)
            ConvertPixel(layout_, palette_, rows_in, x, out);
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  uint64_t PlaneRowBytes(uint64_t width) const {
    return (width * samples_per_plane_ * layout_.bits + 7) / 8;
  }

  // A strip or tile the directory does not list (offset or size 0): libtiff
  // would read an uncompressed one from offset 0, the file's header.
  absl::Status CheckListed(uint32_t strile) {
    if (TIFFGetStrileOffset(tif_, strile) == 0 ||
        TIFFGetStrileByteCount(tif_, strile) == 0) {
      return Corrupt(absl::StrCat("strip or tile ", strile, " is not listed"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckRead(tmsize_t got, size_t expected) {
    if (source_->failed) {
      return Refuse(
          context_,
          source_->reader.short_read ? Refusal::kTruncated : Refusal::kCorrupt,
          source_->message);
    }
    if (got < 0 || static_cast<size_t>(got) != expected)
      return Refuse(context_, Refusal::kTruncated,
                    absl::StrCat("decoded ", got, " of ", expected, " bytes"));
    return absl::OkStatus();
  }

  absl::Status Corrupt(absl::string_view detail) {
    return Refuse(context_, Refusal::kCorrupt, detail);
  }

  TIFF* tif_;
  TiffSource* source_;
  const Layout& layout_;
  const PilPalette& palette_;
  Rgb8Image* image_;
  const DecodeContext& context_;
  const int planes_;
  const int samples_per_plane_;
};

}  // namespace

absl::StatusOr<Rgb8Image> DecodeTiff(absl::string_view encoded,
                                     const DecodeContext& context) {
  TiffSource source;
  source.reader.data = encoded;
  std::unique_ptr<TIFFOpenOptions, OptionsFree> options(TIFFOpenOptionsAlloc());
  // No single libtiff allocation beyond what this image may need: directory
  // arrays and strip buffers come from tags an attacker writes.
  TIFFOpenOptionsSetMaxSingleMemAlloc(
      options.get(), static_cast<tmsize_t>(std::min<uint64_t>(
                         context.limits.max_image_pixels * 8 + (64u << 20),
                         uint64_t{1} << 40)));
  TIFFOpenOptionsSetErrorHandlerExtR(options.get(), OnTiffError, &source);
  TIFFOpenOptionsSetWarningHandlerExtR(options.get(), OnTiffWarning, &source);
  // "m": never memory-map (there is no file), reads go through ReadTiff;
  // "c": no strip chopping, which would make up strips for rows the file
  // does not list (read from whatever bytes follow).
  std::unique_ptr<TIFF, TiffCloser> tif(TIFFClientOpenExt(
      "image", "rmc", &source, ReadTiff, WriteTiff, SeekTiff, CloseTiff,
      SizeTiff, MapTiff, UnmapTiff, options.get()));
  if (tif == nullptr) {
    return Refuse(
        context,
        source.reader.short_read ? Refusal::kTruncated : Refusal::kCorrupt,
        source.failed ? source.message : "no directory");
  }
  uint32_t width = 0, height = 0;
  if (!TIFFGetField(tif.get(), TIFFTAG_IMAGEWIDTH, &width) ||
      !TIFFGetField(tif.get(), TIFFTAG_IMAGELENGTH, &height)) {
    return Refuse(context, Refusal::kCorrupt, "no image size");
  }
  if (absl::Status s = CheckPixelLimit(context, width, height); !s.ok())
    return s;
  if (source.failed)  // a damaged directory (see OnTiffWarning)
    return Refuse(context, Refusal::kCorrupt, source.message);
  absl::StatusOr<Layout> layout = ReadLayout(tif.get(), context);
  if (!layout.ok()) return layout.status();

  PilPalette palette;
  if (layout->kind == Kind::kPalette) {
    uint16_t *red = nullptr, *green = nullptr, *blue = nullptr;
    if (!TIFFGetField(tif.get(), TIFFTAG_COLORMAP, &red, &green, &blue))
      return Refuse(context, Refusal::kCorrupt,
                    "palette image without a palette");
    // Pillow keeps each 16-bit entry's high byte.
    for (int i = 0; i < (1 << layout->bits); ++i)
      palette.Set(i, red[i] >> 8, green[i] >> 8, blue[i] >> 8);
  }

  Rgb8Image image = NewRgb8Image(width, height);
  source.decoding = true;
  PixelReader reader(tif.get(), &source, *layout, palette, &image, context);
  const absl::Status read =
      TIFFIsTiled(tif.get()) ? reader.ReadTiles() : reader.ReadStrips();
  if (!read.ok()) return read;
  uint16_t orientation = ORIENTATION_TOPLEFT;
  TIFFGetField(tif.get(), TIFFTAG_ORIENTATION, &orientation);
  return OrientLikePilTiff(std::move(image), orientation);
}

}  // namespace iblip::model::image_codecs
