#include "server/http/favicon.h"

#include <cstdint>

namespace iblip::server::http {
namespace {

constexpr int kSize = 16;

void PutLe(std::string& out, uint32_t value, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// An .ico holding one 32-bit BMP image: ICONDIR, one ICONDIRENTRY, a
// BITMAPINFOHEADER (height doubled: color rows, then the 1-bit mask), the
// BGRA rows bottom-up, and an all-zero mask (alpha decides).
std::string DrawIcon() {
  constexpr uint32_t kPixelBytes = kSize * kSize * 4;
  constexpr uint32_t kMaskBytes = kSize * 4;  // 16 bits, padded to 32
  constexpr uint32_t kImageBytes = 40 + kPixelBytes + kMaskBytes;
  std::string ico;
  PutLe(ico, 0, 2);  // reserved
  PutLe(ico, 1, 2);  // type: icon
  PutLe(ico, 1, 2);  // one image
  PutLe(ico, kSize, 1);
  PutLe(ico, kSize, 1);
  PutLe(ico, 0, 1);   // no palette
  PutLe(ico, 0, 1);   // reserved
  PutLe(ico, 1, 2);   // planes
  PutLe(ico, 32, 2);  // bits per pixel
  PutLe(ico, kImageBytes, 4);
  PutLe(ico, 6 + 16, 4);  // where the image starts
  PutLe(ico, 40, 4);      // BITMAPINFOHEADER size
  PutLe(ico, kSize, 4);
  PutLe(ico, 2 * kSize, 4);
  PutLe(ico, 1, 2);
  PutLe(ico, 32, 2);
  PutLe(ico, 0, 4);  // BI_RGB
  PutLe(ico, kPixelBytes + kMaskBytes, 4);
  for (int i = 0; i < 4; ++i) PutLe(ico, 0, 4);
  for (int y = kSize - 1; y >= 0; --y) {
    for (int x = 0; x < kSize; ++x) {
      const int dx = 2 * x + 1 - kSize, dy = 2 * y + 1 - kSize;
      const bool inside = dx * dx + dy * dy <= (kSize - 1) * (kSize - 1);
      // #3b5bdb, opaque inside the circle, transparent outside.
      PutLe(ico, inside ? 0xFF3B5BDBu : 0u, 4);
    }
  }
  ico.append(kMaskBytes, '\0');
  return ico;
}

}  // namespace

const std::string& FaviconIco() {
  static const std::string* icon = new std::string(DrawIcon());
  return *icon;
}

}  // namespace iblip::server::http
