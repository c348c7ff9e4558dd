#include "model/runtime/image_preprocessor.h"

#include <gtest/gtest.h>

#include "tests/unit/test_package.h"

namespace iblip::model {
namespace {

using testing::EncodeSolidImage;

ImageSpec ClipSpec(int size) {
  ImageSpec spec;
  spec.size = size;
  spec.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  spec.std = {0.26862954f, 0.26130258f, 0.27577711f};
  return spec;
}

TEST(ImagePreprocessorTest, SolidColorBecomesNormalizedPlanes) {
  const ImageSpec spec = ClipSpec(16);
  ImagePreprocessor processor(spec, {});
  for (const std::string ext : {".png", ".bmp", ".jpg"}) {
    auto pixels = processor.Process(EncodeSolidImage(40, 30, 255, 0, 0, ext),
                                    "images[0].data");
    ASSERT_TRUE(pixels.ok()) << ext << ": " << pixels.status();
    ASSERT_EQ(pixels->size, 16);
    ASSERT_EQ(pixels->chw.size(), 3u * 16 * 16);
    // JPEG is lossy: allow a few 8-bit steps.
    const float tolerance = ext == ".jpg" ? 4.0f / 255 / spec.std[0] : 1e-5f;
    EXPECT_NEAR(pixels->chw[0], (1.0f - spec.mean[0]) / spec.std[0], tolerance)
        << ext;  // R
    EXPECT_NEAR(pixels->chw[256], (0.0f - spec.mean[1]) / spec.std[1],
                tolerance)
        << ext;  // G
    EXPECT_NEAR(pixels->chw[512], (0.0f - spec.mean[2]) / spec.std[2],
                tolerance)
        << ext;  // B
  }
}

TEST(ImagePreprocessorTest, EmptyImageNamesTheField) {
  ImagePreprocessor processor(ClipSpec(16), {});
  auto pixels = processor.Process("", "images[0].data");
  ASSERT_EQ(pixels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pixels.status().message().rfind("images[0].data", 0), 0u)
      << pixels.status();
}

TEST(ImagePreprocessorTest, GarbageAndTruncatedBytesAreInvalidArgument) {
  ImagePreprocessor processor(ClipSpec(16), {});
  EXPECT_EQ(processor.Process("definitely not an image", "f").status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string png = EncodeSolidImage(64, 64, 1, 2, 3);
  EXPECT_EQ(
      processor.Process(png.substr(0, png.size() / 3), "f").status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ImagePreprocessorTest, EnforcesByteAndPixelLimits) {
  const std::string png = EncodeSolidImage(100, 100, 9, 9, 9);
  ImagePreprocessor small_bytes(ClipSpec(16), {png.size() - 1, 1'000'000});
  EXPECT_EQ(small_bytes.Process(png, "f").status().code(),
            absl::StatusCode::kInvalidArgument);
  ImagePreprocessor small_pixels(ClipSpec(16), {1'000'000, 100 * 100 - 1});
  auto status = small_pixels.Process(png, "f").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("pixels"), std::string::npos) << status;
}

}  // namespace
}  // namespace iblip::model
