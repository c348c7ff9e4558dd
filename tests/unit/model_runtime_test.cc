// The TorchScript boundary: package manifests, model loading and parity with
// the Python outputs recorded when the tiny package was built.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/runtime/instructblip_model.h"
#include "model/runtime/package.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_package.h"

namespace iblip::model {
namespace {

namespace fs = std::filesystem;
using testing::SharedTinyModel;
using testing::TinyPackageDir;

TEST(PackageTest, LoadsTheTinyPackage) {
  auto manifest = LoadPackageManifest(TinyPackageDir());
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->model_id, "iblip/tiny-llama-random");
  EXPECT_EQ(manifest->lm_family, LmFamily::kLlama);
  EXPECT_GT(manifest->num_query_tokens, 0);
  EXPECT_EQ(manifest->eos_token_ids,
            (std::vector<int32_t>{1, 2}));  // config and tokenizer EOS
  EXPECT_TRUE(fs::exists(manifest->vision_module_path));
}

TEST(PackageTest, MissingPackageIsNotFound) {
  EXPECT_EQ(LoadPackageManifest("/nonexistent/package").status().code(),
            absl::StatusCode::kNotFound);
}

class BrokenPackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("iblip-broken-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::copy(TinyPackageDir(), dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void WriteManifest(const std::string& text) {
    std::ofstream(dir_ / "manifest.json") << text;
  }
  nlohmann::json Manifest() {
    return nlohmann::json::parse(std::ifstream(dir_ / "manifest.json"));
  }
  fs::path dir_;
};

TEST_F(BrokenPackageTest, CorruptJsonIsFailedPrecondition) {
  WriteManifest("{ not json");
  EXPECT_EQ(LoadPackageManifest(dir_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(BrokenPackageTest, MissingFieldIsNamed) {
  auto manifest = Manifest();
  manifest.erase("num_query_tokens");
  WriteManifest(manifest.dump());
  auto status = LoadPackageManifest(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("num_query_tokens"), std::string::npos)
      << status;
}

TEST_F(BrokenPackageTest, MissingModuleFileIsNotFound) {
  fs::remove(dir_ / "vision_encoder.pt");
  auto status = LoadPackageManifest(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("modules.vision"), std::string::npos)
      << status;
}

TEST_F(BrokenPackageTest, CorruptTorchScriptFailsToLoadWithAStatus) {
  std::ofstream(dir_ / "language_model.pt") << "this is not a zip archive";
  auto manifest = LoadPackageManifest(dir_);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  auto model = InstructBlipModel::Load(*manifest, RuntimeOptions{"cpu", 1});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(BrokenPackageTest, UnknownFormatVersionIsRejected) {
  auto manifest = Manifest();
  manifest["format_version"] = 99;
  WriteManifest(manifest.dump());
  EXPECT_EQ(LoadPackageManifest(dir_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(InstructBlipModelTest, BadDeviceIsInvalidArgument) {
  auto manifest = LoadPackageManifest(TinyPackageDir());
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(InstructBlipModel::Load(*manifest, RuntimeOptions{"tpu:7", 1})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(InstructBlipModelTest, OutOfVocabularyIdIsAnErrorNotACrash) {
  auto& tiny = SharedTinyModel();
  PixelValues pixels;
  pixels.size = tiny.manifest.image.size;
  pixels.chw.assign(3ull * pixels.size * pixels.size, 0.0f);
  auto image = tiny.model->EncodeImage(pixels, {101, 102});
  ASSERT_TRUE(image.ok()) << image.status();
  auto pool = tiny.model->CreateCachePool(1, 64ull << 20, 64);
  ASSERT_TRUE(pool.ok()) << pool.status();
  const int slot = *(*pool)->Allocate();
  auto logits = tiny.model->PrefillSlot(*image, {2, 1 << 20}, **pool, slot);
  ASSERT_FALSE(logits.ok());
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInternal);
  // The failed prefill left the slot empty: decoding it is refused, not run.
  EXPECT_EQ(tiny.model->DecodeBatch(**pool, {slot}, {5}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace iblip::model
