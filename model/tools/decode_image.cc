// iblip-decode-image: what the server's image decoder makes of files, one
// line per file, for parity checks against Pillow and for timing refusals.
//
//   iblip-decode-image [--max-pixels N] FILE...
//       "FILE<TAB>ok<TAB>WxH<TAB>SHA-256 of the RGB bytes" or
//       "FILE<TAB>refused<TAB>message".
//   iblip-decode-image --hex FILE...
//       also prints the RGB bytes in hex after each decoded file (small
//       images: for finding which pixels differ from Pillow's).
//   iblip-decode-image --time N [--max-pixels N] FILE...
//       decodes each file N times and adds the fastest and the median wall
//       time of one decode, and how much the peak resident memory grew over
//       the whole run (KiB; 0 means no new peak: nothing large allocated).
//
// Exit status: 0 (refusals are results), 1 unreadable file, 2 bad command line.

#include <openssl/sha.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "model/runtime/image_decoder.h"

namespace {

long PeakRssKiB() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

std::string Sha256Hex(const std::vector<uint8_t>& bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(bytes.data(), bytes.size(), digest);
  std::string hex;
  char two[3];
  for (unsigned char b : digest) {
    std::snprintf(two, sizeof(two), "%02x", b);
    hex += two;
  }
  return hex;
}

}  // namespace

int main(int argc, char** argv) {
  iblip::model::ImageLimits limits;
  limits.max_image_bytes = uint64_t{1} << 40;  // files are the caller's
  int repeats = 0;
  bool hex = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--max-pixels" || arg == "--time") && i + 1 < argc) {
      const long long value = std::atoll(argv[++i]);
      if (value <= 0) {
        std::cerr << "iblip-decode-image: " << arg
                  << " needs a positive number\n";
        return 2;
      }
      if (arg == "--time")
        repeats = static_cast<int>(value);
      else
        limits.max_image_pixels = static_cast<uint64_t>(value);
    } else if (arg == "--hex") {
      hex = true;
    } else if (arg.rfind("--", 0) == 0) {
      std::cerr << "usage: iblip-decode-image [--max-pixels N] [--time N] "
                   "[--hex] FILE...\n";
      return 2;
    } else {
      files.push_back(arg);
    }
  }
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::cerr << "iblip-decode-image: cannot read " << file << "\n";
      return 1;
    }
    std::stringstream bytes;
    bytes << in.rdbuf();
    const std::string data = bytes.str();

    const long rss_before = PeakRssKiB();
    std::vector<double> seconds;
    auto image = iblip::model::DecodeImageAsPil(data, limits, "image");
    for (int r = 0; r < repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      image = iblip::model::DecodeImageAsPil(data, limits, "image");
      seconds.push_back(std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - start)
                            .count());
    }
    std::cout << file << "\t";
    if (image.ok()) {
      std::cout << "ok\t" << image->width << "x" << image->height << "\t"
                << Sha256Hex(image->pixels);
    } else {
      std::cout << "refused\t" << image.status().message();
    }
    if (repeats > 0) {
      std::sort(seconds.begin(), seconds.end());
      std::printf("\tfastest %.1f us\tmedian %.1f us\tpeak RSS +%ld KiB",
                  seconds.front() * 1e6, seconds[seconds.size() / 2] * 1e6,
                  PeakRssKiB() - rss_before);
      std::fflush(stdout);
    }
    std::cout << "\n";
    if (hex && image.ok()) {
      for (uint8_t b : image->pixels) std::printf("%02x", b);
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}
