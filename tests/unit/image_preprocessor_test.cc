#include "model/runtime/image_preprocessor.h"

#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_package.h"

namespace iblip::model {
namespace {

using testing::EncodeSolidImage;

}  // namespace

ImageSpec ClipSpec(int size) {
  ImageSpec spec;
  spec.size = size;
  spec.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  spec.std = {0.26862954f, 0.26130258f, 0.27577711f};
  return spec;
}

namespace {

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

namespace iblip::model {
namespace {

// Every image of the reference processor fixtures: each element within one
// 8-bit step (1/(255*std)) of Hugging Face's pixel_values, and >= 99% equal
// to 1e-6.
TEST(ImagePreprocessorParityTest, MatchesHuggingFaceOnEveryFixtureImage) {
  const std::string dir = testing::FixturesDir() + "/processor";
  const auto index =
      nlohmann::json::parse(testing::ReadFileOrDie(dir + "/index.json"));
  ASSERT_GE(index["cases"].size(), 14u);
  for (const auto& c : index["cases"]) {
    SCOPED_TRACE(c["image"].get<std::string>());
    ImageSpec spec = ClipSpec(c["target"]);
    ImagePreprocessor processor(spec, {});
    auto pixels = processor.Process(
        testing::ReadFileOrDie(dir + "/" + c["image"].get<std::string>()),
        "images[0].data");
    ASSERT_TRUE(pixels.ok()) << pixels.status();
    const auto expected =
        testing::ReadNpyOrDie(dir + "/" + c["pixel_values"].get<std::string>());
    ASSERT_EQ(pixels->chw.size(), expected.data.size());
    const size_t plane = pixels->chw.size() / 3;
    size_t identical = 0;
    float worst_steps = 0;
    for (size_t i = 0; i < expected.data.size(); ++i) {
      const float diff = std::abs(pixels->chw[i] - expected.data[i]);
      const float step = 1.0f / (255.0f * spec.std[i / plane]);
      worst_steps = std::max(worst_steps, diff / step);
      identical += diff <= 1e-6f;
    }
    EXPECT_LE(worst_steps, 1.0f + 1e-4f);
    EXPECT_GE(static_cast<double>(identical) / expected.data.size(), 0.99);
    RecordProperty(
        c["image"].get<std::string>(),
        absl::StrCat(identical, "/", expected.data.size(), " identical"));
  }
}

TEST(ImagePreprocessorTest, SixteenBitPngFollowsPillow) {
  // Pillow reads 16-bit gray as I;16 and convert("RGB") clips it at 255;
  // 16-bit RGB is read keeping the high byte.
  ImagePreprocessor processor(ClipSpec(2), {});
  cv::Mat gray(2, 2, CV_16UC1, cv::Scalar(100));
  cv::Mat color(2, 2, CV_16UC3, cv::Scalar(0x1234, 0x5678, 0x9ABC));  // B, G, R
  std::vector<uchar> bytes;
  cv::imencode(".png", gray, bytes);
  auto g = processor.Process(std::string(bytes.begin(), bytes.end()), "f");
  ASSERT_TRUE(g.ok()) << g.status();
  const ImageSpec spec = ClipSpec(2);
  EXPECT_NEAR(g->chw[0], (100 / 255.0f - spec.mean[0]) / spec.std[0], 1e-5);
  cv::imencode(".png", color, bytes);
  auto c = processor.Process(std::string(bytes.begin(), bytes.end()), "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->chw[0], (0x9A / 255.0f - spec.mean[0]) / spec.std[0],
              1e-5);  // R high byte
}

TEST(ImagePreprocessorTest, RandomBytesNeverCrash) {
  ImagePreprocessor processor(ClipSpec(8), {1 << 20, 1 << 20});
  std::mt19937 rng(7);
  const std::string png = testing::EncodeSolidImage(16, 16, 1, 2, 3);
  const std::string jpg = testing::EncodeSolidImage(16, 16, 1, 2, 3, ".jpg");
  for (int i = 0; i < 300; ++i) {
    std::string data = (i % 3 == 0)   ? png
                       : (i % 3 == 1) ? jpg
                                      : std::string(64, '\0');
    // Corrupt some bytes, or cut the file, keeping the magic half the time.
    const int edits = 1 + rng() % 8;
    for (int e = 0; e < edits; ++e)
      data[(i % 2 ? 8 : 0) + rng() % (data.size() - 8)] =
          static_cast<char>(rng());
    if (rng() % 2) data.resize(rng() % data.size());
    auto result = processor.Process(data, "images[0].data");
    if (!result.ok()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(result.status().message().rfind("images[0].data", 0), 0u);
    }
  }
}

}  // namespace
}  // namespace iblip::model
