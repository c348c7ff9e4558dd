// BMP, read here rather than through a library: no Debian library decodes it
// as Pillow does (OpenCV's reader scales 5-bit channels by shifting where
// Pillow multiplies by 255/31, handles bit masks and RLE differently, and
// prints to stderr on every refusal), and the format is a header, a palette
// and rows of samples. This follows BmpImagePlugin.py (Pillow 9.4) rule by
// rule; every read is bounds-checked against the data.

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/runtime/image_codecs/codecs.h"

namespace iblip::model::image_codecs {
namespace {

uint32_t Le16(const unsigned char* p) { return p[0] | (uint32_t{p[1]} << 8); }
uint32_t Le32(const unsigned char* p) { return Le16(p) | (Le16(p + 2) << 16); }

enum Compression : uint32_t { kRaw = 0, kRle8 = 1, kRle4 = 2, kBitfields = 3 };

// How one pixel's bytes become RGB (Pillow's rawmodes for BMP).
enum class Layout {
  kIndexed,  // P;1, P;4, P (and the grey "1" and "L" special cases)
  kBgr15,    // 16-bit x1r5g5b5
  kBgr16,    // 16-bit r5g6b5 (bit masks)
  kBgr,      // 24-bit
  kBgrx,     // 32-bit B, G, R, unused (or alpha) bytes
  kXbgr,     // 32-bit unused, B, G, R
  kRgba,     // 32-bit R, G, B, A
};

struct BmpHeader {
  uint64_t width = 0, height = 0;
  bool top_down = false;
  uint32_t bits = 0;
  uint32_t compression = kRaw;
  uint32_t colors = 0;
  size_t header_end = 0;          // where the palette starts
  size_t palette_entry_size = 4;  // 3 in OS/2 1.x files
  size_t data_offset = 0;
  Layout layout = Layout::kIndexed;
};

uint8_t Scale5(uint32_t v) { return static_cast<uint8_t>(v * 255 / 31); }
uint8_t Scale6(uint32_t v) { return static_cast<uint8_t>(v * 255 / 63); }

// Maps a bit-mask set to Pillow's rawmode; false for a set Pillow refuses.
bool LayoutForMasks(uint32_t bits, const uint32_t mask[4], Layout* layout) {
  auto is = [&](uint32_t r, uint32_t g, uint32_t b, uint32_t a) {
    return mask[0] == r && mask[1] == g && mask[2] == b && mask[3] == a;
  };
  if (bits == 32) {
    if (is(0xFF0000, 0xFF00, 0xFF, 0) ||
        is(0xFF0000, 0xFF00, 0xFF, 0xFF000000) || is(0, 0, 0, 0)) {
      *layout = Layout::kBgrx;
    } else if (is(0xFF000000, 0xFF0000, 0xFF00, 0) ||
               is(0xFF000000, 0xFF0000, 0xFF00, 0xFF)) {
      *layout = Layout::kXbgr;
    } else if (is(0xFF, 0xFF00, 0xFF0000, 0xFF000000)) {
      *layout = Layout::kRgba;
    } else {
      return false;
    }
    return true;
  }
  // 24 and 16 bits: Pillow compares the three colour masks only.
  const uint32_t no_alpha[4] = {mask[0], mask[1], mask[2], 0};
  auto rgb_is = [&](uint32_t r, uint32_t g, uint32_t b) {
    return no_alpha[0] == r && no_alpha[1] == g && no_alpha[2] == b;
  };
  if (bits == 24 && rgb_is(0xFF0000, 0xFF00, 0xFF)) {
    *layout = Layout::kBgr;
  } else if (bits == 16 && rgb_is(0xF800, 0x7E0, 0x1F)) {
    *layout = Layout::kBgr16;
  } else if (bits == 16 && rgb_is(0x7C00, 0x3E0, 0x1F)) {
    *layout = Layout::kBgr15;
  } else {
    return false;
  }
  return true;
}

absl::StatusOr<BmpHeader> ReadHeader(absl::string_view encoded,
                                     const DecodeContext& context) {
  const auto* p = reinterpret_cast<const unsigned char*>(encoded.data());
  const size_t n = encoded.size();
  auto truncated = [&] {
    return Refuse(context, Refusal::kTruncated, "header");
  };
  if (n < 18) return truncated();
  BmpHeader h;
  h.data_offset = Le32(p + 10);
  const uint32_t header_size = Le32(p + 14);
  if (header_size != 12 && header_size != 40 && header_size != 64 &&
      header_size != 108 && header_size != 124) {
    return Refuse(context, Refusal::kUnsupported,
                  absl::StrCat("header size ", header_size));
  }
  if (n < 14 + header_size) return truncated();
  const unsigned char* info = p + 18;  // the header after its size field
  h.header_end = 14 + header_size;
  uint32_t mask[4] = {0, 0, 0, 0};
  if (header_size == 12) {  // OS/2 1.x: 16-bit sizes, no compression
    h.width = Le16(info);
    h.height = Le16(info + 2);
    h.bits = Le16(info + 6);
    h.palette_entry_size = 3;
  } else {
    h.width = Le32(info);
    // Pillow reads a negative height (top-down rows) by its top byte only.
    const uint32_t height = Le32(info + 4);
    h.top_down = info[7] == 0xFF;
    h.height = h.top_down ? (uint64_t{1} << 32) - height : height;
    h.bits = Le16(info + 10);
    h.compression = Le32(info + 12);
    h.colors = Le32(info + 28);
    if (h.compression == kBitfields) {
      if (header_size >= 56) {
        for (int i = 0; i < 4; ++i) mask[i] = Le32(info + 36 + 4 * i);
      } else {  // a 40-byte header: three masks follow it, alpha is reserved
        if (n < h.header_end + 12) return truncated();
        for (int i = 0; i < 3; ++i) mask[i] = Le32(p + h.header_end + 4 * i);
        h.header_end += 12;
      }
    }
  }
  if (absl::Status s = CheckPixelLimit(context, h.width, h.height); !s.ok())
    return s;
  if (h.colors == 0 && h.bits < 32) h.colors = 1u << h.bits;
  if (h.data_offset == 14 + header_size && h.bits <= 8)
    h.data_offset += 4 * uint64_t{h.colors};

  switch (h.bits) {
    case 1:
    case 4:
    case 8:
      h.layout = Layout::kIndexed;
      break;
    case 16:
      h.layout = Layout::kBgr15;
      break;
    case 24:
      h.layout = Layout::kBgr;
      break;
    case 32:
      h.layout = Layout::kBgrx;
      break;
    default:
      return Refuse(context, Refusal::kUnsupported,
                    absl::StrCat(h.bits, " bits per pixel"));
  }
  if (h.compression == kBitfields) {
    if (!LayoutForMasks(h.bits, mask, &h.layout))
      return Refuse(context, Refusal::kUnsupported, "bit-field layout");
  } else if (h.compression == kRle8 || h.compression == kRle4) {
    // Pillow's RLE decoder writes indices; other depths are not sensible.
    if (h.bits != (h.compression == kRle8 ? 8u : 4u))
      return Refuse(context, Refusal::kUnsupported, "RLE with that depth");
  } else if (h.compression != kRaw) {
    return Refuse(context, Refusal::kUnsupported,
                  absl::StrCat("compression ", h.compression));
  }
  return h;
}

// Palette entries (B, G, R[, reserved]) after the header. A short palette
// (the file ends) sets fewer entries; the rest keep Pillow's grey ramp.
absl::StatusOr<PilPalette> ReadPalette(absl::string_view encoded,
                                       const BmpHeader& h,
                                       const DecodeContext& context,
                                       size_t* palette_end) {
  if (h.colors == 0 || h.colors > 65536) {
    return Refuse(context, Refusal::kCorrupt,
                  absl::StrCat("palette of ", h.colors, " colors"));
  }
  const auto* p = reinterpret_cast<const unsigned char*>(encoded.data());
  const size_t available =
      encoded.size() > h.header_end ? encoded.size() - h.header_end : 0;
  const size_t bytes =
      std::min<size_t>(h.palette_entry_size * h.colors, available);
  // Pillow reads that many bytes (the pixel data, if the palette claims more
  // colors than it has) and its putpalette refuses more than 256 entries.
  if (bytes / h.palette_entry_size > 256) {
    return Refuse(
        context, Refusal::kUnsupported,
        absl::StrCat("palette of ", bytes / h.palette_entry_size, " colors"));
  }
  PilPalette palette;
  for (size_t i = 0; i < bytes / h.palette_entry_size; ++i) {
    const unsigned char* e = p + h.header_end + i * h.palette_entry_size;
    palette.Set(static_cast<int>(i), e[2], e[1], e[0]);
  }
  *palette_end = h.header_end + bytes;
  return palette;
}

// Pillow's BmpRleDecoder, step by step: indices in file row order.
std::vector<uint8_t> DecodeRle(absl::string_view encoded, size_t offset,
                               const BmpHeader& h) {
  const auto* p = reinterpret_cast<const unsigned char*>(encoded.data());
  const size_t n = encoded.size();
  const uint64_t xsize = h.width, total = h.width * h.height;
  const bool rle4 = h.compression == kRle4;
  std::vector<uint8_t> data;
  data.reserve(total);
  size_t at = offset;
  uint64_t x = 0;
  while (data.size() < total) {
    if (at + 2 > n) break;
    uint64_t count = p[at];
    const uint8_t byte = p[at + 1];
    at += 2;
    if (count != 0) {  // a run
      if (x + count > xsize) count = x < xsize ? xsize - x : 0;
      for (uint64_t i = 0; i < count; ++i) {
        data.push_back(!rle4 ? byte : (i % 2 == 0 ? byte >> 4 : byte & 0x0F));
      }
      x += count;
    } else if (byte == 0) {  // end of line
      while (data.size() % xsize != 0) data.push_back(0);
      x = 0;
    } else if (byte == 1) {  // end of bitmap
      break;
    } else if (byte == 2) {  // delta: skip right, up
      // Pillow 9.4 reads the two offset bytes twice and uses the second
      // pair (fixed in later Pillow); the reference is 9.4.
      if (at + 2 > n) break;
      at += 2;
      if (at + 2 > n) return data;  // Pillow: unpacking a short read fails
      const uint64_t skip = p[at] + uint64_t{p[at + 1]} * xsize;
      at += 2;
      if (data.size() + skip > total) {  // Pillow pads past the end: enough
        data.resize(total, 0);
        break;
      }
      data.resize(data.size() + skip, 0);
      x = data.size() % xsize;
    } else {  // absolute: `byte` literal pixels, padded to 16 bits
      const size_t wanted = rle4 ? byte / 2 : byte;
      const size_t got = at + wanted <= n ? wanted : n - at;
      for (size_t i = 0; i < got; ++i) {
        if (rle4) {
          data.push_back(p[at + i] >> 4);
          data.push_back(p[at + i] & 0x0F);
        } else {
          data.push_back(p[at + i]);
        }
      }
      at += got;
      if (got < wanted) break;
      x += byte;
      if (at % 2 != 0) ++at;
    }
  }
  return data;
}

void PutPixel(const unsigned char* in, Layout layout, uint8_t* out) {
  switch (layout) {
    case Layout::kBgr15: {
      const uint32_t v = Le16(in);
      out[0] = Scale5((v >> 10) & 31), out[1] = Scale5((v >> 5) & 31),
      out[2] = Scale5(v & 31);
      return;
    }
    case Layout::kBgr16: {
      const uint32_t v = Le16(in);
      out[0] = Scale5((v >> 11) & 31), out[1] = Scale6((v >> 5) & 63),
      out[2] = Scale5(v & 31);
      return;
    }
    case Layout::kBgr:
    case Layout::kBgrx:
      out[0] = in[2], out[1] = in[1], out[2] = in[0];
      return;
    case Layout::kXbgr:
      out[0] = in[3], out[1] = in[2], out[2] = in[1];
      return;
    case Layout::kRgba:
      out[0] = in[0], out[1] = in[1], out[2] = in[2];
      return;
    case Layout::kIndexed:
      return;  // handled by the caller
  }
}

}  // namespace

absl::StatusOr<Rgb8Image> DecodeBmp(absl::string_view encoded,
                                    const DecodeContext& context) {
  absl::StatusOr<BmpHeader> header = ReadHeader(encoded, context);
  if (!header.ok()) return header.status();
  const BmpHeader& h = *header;
  PilPalette palette;
  size_t data_offset = h.data_offset;
  if (h.layout == Layout::kIndexed) {
    size_t palette_end = 0;
    auto read = ReadPalette(encoded, h, context, &palette_end);
    if (!read.ok()) return read.status();
    palette = *read;
    if (data_offset == 0) data_offset = palette_end;
  } else if (data_offset == 0) {
    data_offset = h.header_end;
  }

  const auto* p = reinterpret_cast<const unsigned char*>(encoded.data());
  Rgb8Image image = NewRgb8Image(h.width, h.height);
  // The file's n-th row is the image's bottom n-th row unless top-down.
  auto image_row = [&](uint64_t file_row) {
    const uint64_t y = h.top_down ? file_row : h.height - 1 - file_row;
    return image.pixels.data() + y * h.width * 3;
  };

  if (h.compression == kRle8 || h.compression == kRle4) {
    const std::vector<uint8_t> indices = DecodeRle(encoded, data_offset, h);
    if (indices.size() < h.width * h.height)
      return Refuse(context, Refusal::kTruncated, "RLE data ends early");
    for (uint64_t row = 0; row < h.height; ++row) {
      uint8_t* out = image_row(row);
      for (uint64_t x = 0; x < h.width; ++x)
        std::memcpy(out + 3 * x, palette[indices[row * h.width + x]], 3);
    }
    return image;
  }

  // Uncompressed rows, 4-byte aligned; the last row needs no padding.
  const uint64_t row_bytes = (h.width * h.bits + 7) / 8;
  const uint64_t stride = ((h.width * h.bits + 31) >> 3) & ~uint64_t{3};
  const uint64_t needed = stride * (h.height - 1) + row_bytes;
  if (data_offset > encoded.size() || encoded.size() - data_offset < needed)
    return Refuse(context, Refusal::kTruncated, "pixel data ends early");
  const uint32_t pixel_bytes = h.bits / 8;
  for (uint64_t row = 0; row < h.height; ++row) {
    const unsigned char* in = p + data_offset + row * stride;
    uint8_t* out = image_row(row);
    for (uint64_t x = 0; x < h.width; ++x, out += 3) {
      if (h.layout != Layout::kIndexed) {
        PutPixel(in + x * pixel_bytes, h.layout, out);
        continue;
      }
      // 1 and 4 bits: most significant bits first.
      const unsigned index = h.bits == 8 ? in[x]
                             : h.bits == 4
                                 ? (in[x / 2] >> (x % 2 == 0 ? 4 : 0)) & 0x0F
                                 : (in[x / 8] >> (7 - x % 8)) & 1;
      std::memcpy(out, palette[index], 3);
    }
  }
  return image;
}

}  // namespace iblip::model::image_codecs
