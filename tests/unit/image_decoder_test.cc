// The image decoder against tests/data/images/ (made by make_cases.py, which
// records what Pillow 9.4 makes of every file): pixel parity on odd but valid
// files in every format, refusal of truncated, corrupt, oversized and
// unaccepted files, and no partial image from any prefix of a valid file.

#include "model/runtime/image_decoder.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_package.h"

namespace iblip::model {
namespace {

constexpr char kField[] = "images[0].data";

struct ImageCase {
  std::string file;
  std::string kind;    // valid, damaged, oversized, other-format
  std::string expect;  // decode, truncated-or-corrupt, corrupt, pixels, format
  nlohmann::json pillow;
  std::string bytes;
};

const std::vector<ImageCase>& AllCases() {
  static const auto* cases = [] {
    const std::string dir =
        std::string(IBLIP_SOURCE_DIR) + "/tests/data/images";
    const auto index =
        nlohmann::json::parse(testing::ReadFileOrDie(dir + "/expected.json"));
    auto* list = new std::vector<ImageCase>;
    for (const auto& c : index["cases"]) {
      list->push_back(
          {c["file"], c["kind"], c["expect"], c["pillow"],
           testing::ReadFileOrDie(dir + "/" + c["file"].get<std::string>())});
    }
    return list;
  }();
  return *cases;
}

std::vector<ImageCase> CasesOfKind(const std::string& kind) {
  std::vector<ImageCase> selected;
  for (const ImageCase& c : AllCases()) {
    if (c.kind == kind) selected.push_back(c);
  }
  return selected;
}

std::string Sha256Hex(const std::vector<uint8_t>& bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(bytes.data(), bytes.size(), digest);
  std::string hex;
  for (unsigned char b : digest)
    absl::StrAppend(&hex, absl::Hex(b, absl::kZeroPad2));
  return hex;
}

absl::StatusOr<Rgb8Image> Decode(absl::string_view bytes,
                                 const ImageLimits& limits = {}) {
  return DecodeImageAsPil(bytes, limits, kField);
}

// INVALID_ARGUMENT, naming the field first, and saying `why`.
void ExpectRefused(const absl::StatusOr<Rgb8Image>& result,
                   const std::vector<std::string>& any_of_why) {
  ASSERT_FALSE(result.ok())
      << "decoded to " << result->width << "x" << result->height;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      absl::StartsWith(result.status().message(), absl::StrCat(kField, ": ")))
      << result.status();
  bool said = false;
  for (const std::string& why : any_of_why)
    said |= absl::StrContains(result.status().message(), why);
  EXPECT_TRUE(said) << result.status();
}

TEST(ImageDecoderTest, AcceptsTheSixCommonFormats) {
  EXPECT_EQ(
      AcceptedImageFormats(),
      (std::vector<std::string>{"JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP"}));
}

// CMYK and gray JPEGs, PNGs of every depth and colour type (palettes shorter
// than their indices, 16-bit, interlaced, without IEND), GIFs whose frame is
// smaller or larger than the screen, BMPs in every rawmode Pillow has (5-bit
// channels, bit masks, RLE), TIFFs (planar, tiled, palette, CMYK, associated
// alpha, orientation), WebP (lossy, alpha, animated): Pillow's exact bytes.
TEST(ImageDecoderPillowParityTest, DecodesEveryValidCaseToPillowsPixels) {
  const std::vector<ImageCase> cases = CasesOfKind("valid");
  ASSERT_GE(cases.size(), 70u);
  for (const ImageCase& c : cases) {
    SCOPED_TRACE(c.file);
    auto image = Decode(c.bytes);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, c.pillow["size"][0].get<int>());
    EXPECT_EQ(image->height, c.pillow["size"][1].get<int>());
    EXPECT_EQ(Sha256Hex(image->pixels), c.pillow["sha256"].get<std::string>());
    for (const auto& s : c.pillow["samples"]) {
      const size_t at =
          (s[1].get<size_t>() * image->width + s[0].get<size_t>()) * 3;
      EXPECT_EQ(image->pixels[at], s[2].get<int>()) << s;
      EXPECT_EQ(image->pixels[at + 1], s[3].get<int>()) << s;
      EXPECT_EQ(image->pixels[at + 2], s[4].get<int>()) << s;
    }
  }
}

// Cut in the middle of a scan, right after the start of scan, in the header;
// GIFs cut at 40% and in the last sub-block; an LZW code outside the table;
// PNG cut in its image data or with a bad header CRC; BMP, TIFF, WebP cut.
// Two JPEGs Pillow decodes (a scan closed early by an end marker, entropy
// data no Huffman table decodes) are refused as corrupt on purpose.
TEST(ImageDecoderTest, RefusesTruncatedAndCorruptFilesSayingWhy) {
  const std::vector<ImageCase> cases = CasesOfKind("damaged");
  ASSERT_GE(cases.size(), 18u);
  for (const ImageCase& c : cases) {
    SCOPED_TRACE(c.file);
    if (c.expect == "corrupt") {
      ExpectRefused(Decode(c.bytes), {"image is corrupt"});
    } else {
      ExpectRefused(Decode(c.bytes),
                    {"image is truncated", "image is corrupt"});
    }
  }
}

// Every prefix of every valid file either is refused or, where only bytes
// after the image are missing (PNG's IEND, GIF's trailer), decodes to the
// whole image: never to a partly decoded one.
TEST(ImageDecoderTest, NoPrefixOfAValidFileDecodesToAnotherImage) {
  for (const ImageCase& c : CasesOfKind("valid")) {
    SCOPED_TRACE(c.file);
    const std::string whole_sha = c.pillow["sha256"];
    const size_t n = c.bytes.size();
    const size_t step = std::max<size_t>(1, n / 97);
    for (size_t cut = 0; cut < n; cut += (cut + 24 >= n ? 1 : step)) {
      auto image = Decode(absl::string_view(c.bytes).substr(0, cut));
      if (image.ok()) {
        EXPECT_EQ(Sha256Hex(image->pixels), whole_sha) << "cut at " << cut;
      } else {
        EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
            << "cut at " << cut;
      }
    }
  }
}

// Headers that claim 400 to 625 million pixels in files of a few hundred
// bytes (a GIF whose 1x1 screen holds a 25000x25000 frame among them) are
// refused from the header: the message gives the size and the limit.
TEST(ImageDecoderTest, RefusesOversizedImagesFromTheirHeaders) {
  const std::vector<ImageCase> cases = CasesOfKind("oversized");
  ASSERT_EQ(cases.size(), 6u);  // one per format
  for (const ImageCase& c : cases) {
    SCOPED_TRACE(c.file);
    ExpectRefused(Decode(c.bytes), {"pixels, more than the limit of 50000000"});
  }
}

// The limit is the decoded size in every format (for GIF the screen grown to
// the frame, for TIFF before orientation): the exact size passes, one pixel
// less refuses.
TEST(ImageDecoderTest, PixelLimitIsTheImagesOwnSizeInEveryFormat) {
  for (const ImageCase& c : CasesOfKind("valid")) {
    SCOPED_TRACE(c.file);
    const uint64_t pixels = c.pillow["size"][0].get<uint64_t>() *
                            c.pillow["size"][1].get<uint64_t>();
    ImageLimits limits;
    limits.max_image_pixels = pixels;
    EXPECT_TRUE(Decode(c.bytes, limits).ok());
    limits.max_image_pixels = pixels - 1;
    ExpectRefused(Decode(c.bytes, limits), {"more than the limit of"});
  }
}

TEST(ImageDecoderTest, RefusesOtherFormatsListingTheAcceptedOnes) {
  std::vector<std::string> inputs = {"definitely not an image", "BZ", "GIF88a"};
  for (const ImageCase& c : CasesOfKind("other-format"))
    inputs.push_back(c.bytes);
  ASSERT_GE(inputs.size(), 7u);  // PPM, JPEG 2000, ICO, TGA among them
  for (const std::string& input : inputs) {
    ExpectRefused(Decode(input),
                  {"in none of the accepted formats (JPEG, PNG, GIF, BMP, "
                   "TIFF, WebP)"});
  }
}

TEST(ImageDecoderTest, RefusesEmptyAndOverlongInput) {
  ExpectRefused(Decode(""), {"image is empty"});
  ImageLimits limits;
  limits.max_image_bytes = 10;
  ExpectRefused(Decode(std::string(11, 'x'), limits),
                {"11 bytes, more than the limit of 10"});
}

// BMP heights are signed (negative: top-down rows); INT32_MIN's negation as
// an int would be undefined (found by the image fuzzer in the header peek
// this decoder replaced).
TEST(ImageDecoderTest, BmpHeightOfInt32MinIsRefusedAsTooLarge) {
  std::string bmp(58, '\0');
  bmp[0] = 'B', bmp[1] = 'M';
  bmp[14] = 40;      // header size
  bmp[18] = 7;       // width 7
  bmp[25] = '\x80';  // height 0x80000000
  bmp[28] = 24;      // bits
  ExpectRefused(Decode(bmp), {"more than the limit"});
}

}  // namespace
}  // namespace iblip::model
