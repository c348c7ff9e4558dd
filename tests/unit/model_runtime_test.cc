// The TorchScript boundary: package manifests, model loading and parity with
// the Python outputs recorded when the tiny package was built.
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "model/runtime/instructblip_model.h"
#include "model/runtime/package.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_package.h"
#include "tests/unit/tiny_model.h"

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

TEST(InstructBlipModelTest, UnusableGpuIsFailedPreconditionNamingTheOption) {
  auto manifest = LoadPackageManifest(TinyPackageDir());
  ASSERT_TRUE(manifest.ok());
  // No machine has 1024 GPUs; a CPU-only LibTorch (Debian's) has none, so
  // there plain "cuda" fails the same way, saying what to do.
  std::vector<std::string> devices = {"cuda:1023"};
  if (!at::hasCUDA()) devices.push_back("cuda");
  for (const std::string& device : devices) {
    auto model = InstructBlipModel::Load(*manifest, RuntimeOptions{device, 1});
    ASSERT_FALSE(model.ok()) << device;
    EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(model.status().message().find("runtime.device"),
              std::string::npos)
        << model.status();
  }
  auto malformed =
      InstructBlipModel::Load(*manifest, RuntimeOptions{"cuda:x", 1});
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(malformed.status().message().find("runtime.device"),
            std::string::npos);
}

TEST(InstructBlipModelTest, OutOfVocabularyIdIsAnErrorNotACrash) {
  auto& tiny = SharedTinyModel();
  PixelValues pixels;
  pixels.size = tiny.manifest.image.size;
  pixels.chw.assign(3ull * pixels.size * pixels.size, 0.0f);
  auto image = tiny.model->EncodeImage(pixels, {101, 102});
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_TRUE(tiny.model->AllocateKvCache(16, 16).ok());
  const std::vector<int> blocks = {0, 1, 2, 3};
  const std::vector<int32_t> tokens = {2, 1 << 20};
  PagedPrefill chunk;
  chunk.image = &*image;
  chunk.tokens = &tokens;
  chunk.end = image->num_positions() + 2;
  chunk.blocks = &blocks;
  auto logits = tiny.model->Prefill(chunk);
  ASSERT_FALSE(logits.ok());
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInternal);
}

// Logits of a prompt prefilled in one piece, through the paged cache.
std::vector<float> PrefillLogits(InstructBlipModel& model,
                                 const ImageEmbedding& image,
                                 const std::vector<int32_t>& prompt,
                                 const std::vector<int>& blocks,
                                 int chunk_size = 1 << 20) {
  std::vector<float> logits;
  const int end = image.num_positions() + static_cast<int>(prompt.size());
  for (int start = 0; start < end; start += chunk_size) {
    PagedPrefill chunk;
    chunk.image = &image;
    chunk.tokens = &prompt;
    chunk.start = start;
    chunk.end = std::min(end, start + chunk_size);
    chunk.blocks = &blocks;
    auto out = model.Prefill(chunk);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    logits = std::move(*out);
  }
  return logits;
}

float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// Decode's device path (taken on the CPU too): rows that need n candidates get
// exactly the n best logits of the whole row (same values, same ids) and
// -inf elsewhere; rows that need all of them get the whole row, bit for bit.
TEST(InstructBlipModelTest, CandidateRowsCarryTheBestLogitsOfTheWholeRow) {
  auto& tiny = SharedTinyModel();
  // The shared model (on IBLIP_TEST_DEVICE) gives whole rows, the second
  // one the device path's candidates, on the CPU too.
  RuntimeOptions options{testing::TestDevice(), 1};
  options.candidates_on_cpu = true;
  auto device_path = InstructBlipModel::Load(tiny.manifest, options);
  ASSERT_TRUE(device_path.ok()) << device_path.status();
  PixelValues pixels;
  pixels.size = tiny.manifest.image.size;
  pixels.chw.resize(3ull * pixels.size * pixels.size);
  for (size_t j = 0; j < pixels.chw.size(); ++j)
    pixels.chw[j] = 0.02f * static_cast<float>(j % 61) - 0.5f;
  auto image = tiny.model->EncodeImage(pixels, {101, 102});
  ASSERT_TRUE(image.ok()) << image.status();
  const std::vector<int32_t> prompt =
      tiny.lm_tokenizer->EncodePrompt("what is in the picture");
  const int length = image->num_positions() + static_cast<int>(prompt.size());
  const std::vector<int> wanted = {0, 1, 5, 1 << 20, 3};  // 1 << 20: > vocab
  std::vector<std::vector<int>> tables;
  for (size_t r = 0; r < wanted.size(); ++r) {
    std::vector<int> blocks;
    for (int b = 0; b * 4 <= length; ++b)
      blocks.push_back(static_cast<int>(r) * 32 + b);
    tables.push_back(blocks);
  }
  std::vector<std::vector<std::vector<float>>> results;
  for (InstructBlipModel* model : {tiny.model.get(), device_path->get()}) {
    ASSERT_TRUE(
        model->AllocateKvCache(32 * static_cast<int>(wanted.size()), 4).ok());
    std::vector<PagedDecodeRow> rows(wanted.size());
    for (size_t r = 0; r < wanted.size(); ++r) {
      ASSERT_FALSE(PrefillLogits(*model, *image, prompt, tables[r]).empty());
      rows[r].token = static_cast<int32_t>(7 + r);
      rows[r].position = length;
      rows[r].blocks = &tables[r];
      rows[r].candidates = model == tiny.model.get() ? 0 : wanted[r];
    }
    auto out = model->Decode(rows);
    ASSERT_TRUE(out.ok()) << out.status();
    results.push_back(std::move(*out));
  }
  const auto& whole = results[0];
  const auto& sent = results[1];
  const int vocab = static_cast<int>(whole[0].size());
  ASSERT_GT(vocab, 8);
  ASSERT_EQ(sent.size(), wanted.size());
  for (size_t r = 0; r < wanted.size(); ++r) {
    ASSERT_EQ(whole[r].size(), static_cast<size_t>(vocab));
    ASSERT_EQ(sent[r].size(), static_cast<size_t>(vocab));
    const int n = wanted[r];
    if (n == 0 || n >= vocab) {
      EXPECT_EQ(sent[r], whole[r]) << "row " << r;
      continue;
    }
    std::vector<float> sorted = whole[r];
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    ASSERT_GT(sorted[n - 1], sorted[n])
        << "random weights tied; pick other rows";
    int finite = 0;
    for (int i = 0; i < vocab; ++i) {
      if (whole[r][i] >= sorted[n - 1]) {
        EXPECT_EQ(sent[r][i], whole[r][i]) << "row " << r << " id " << i;
        ++finite;
      } else {
        EXPECT_EQ(sent[r][i], -std::numeric_limits<float>::infinity());
      }
    }
    EXPECT_EQ(finite, n) << "row " << r;
  }
}

// The engine's pieces equal the whole: the vision encoder run a few layers
// at a time, and a prompt prefilled in chunks into scattered blocks.
TEST(InstructBlipModelTest, PiecesEqualTheWhole) {
  auto& tiny = SharedTinyModel();
  PixelValues pixels;
  pixels.size = tiny.manifest.image.size;
  pixels.chw.resize(3ull * pixels.size * pixels.size);
  for (size_t j = 0; j < pixels.chw.size(); ++j)
    pixels.chw[j] = 0.01f * static_cast<float>(j % 89) - 0.4f;
  auto whole = tiny.model->EncodeVision({&pixels});
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto state = tiny.model->BeginVision({&pixels});
  ASSERT_TRUE(state.ok()) << state.status();
  const int layers = tiny.model->vision_num_layers();
  ASSERT_GE(layers, 2);
  for (int l = 0; l < layers; ++l)
    ASSERT_TRUE(tiny.model->RunVisionLayers(**state, l, l + 1).ok());
  auto pieces = tiny.model->FinishVision(**state);
  ASSERT_TRUE(pieces.ok()) << pieces.status();
  const std::vector<int32_t> qformer = tiny.qformer_tokenizer->Encode("hi");
  auto a = tiny.model->QueryImages(*whole, {qformer});
  auto b = tiny.model->QueryImages(*pieces, {qformer});
  ASSERT_TRUE(a.ok() && b.ok());

  ASSERT_TRUE(tiny.model->AllocateKvCache(64, 4).ok());
  const std::vector<int32_t> prompt =
      tiny.lm_tokenizer->EncodePrompt("what color is the big circle");
  const auto one = PrefillLogits(*tiny.model, (*a)[0], prompt,
                                 {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const auto chunked = PrefillLogits(*tiny.model, (*b)[0], prompt,
                                     {40, 3, 17, 22, 9, 31, 60, 12, 5, 50, 1, 2},
                                     /*chunk_size=*/5);
  ASSERT_FALSE(one.empty());
  EXPECT_LT(MaxDiff(one, chunked), 1e-4);
}

// The server's vision stage batches images and right-pads Q-Former inputs;
// every row must match the unbatched path (up to float rounding).
TEST(InstructBlipModelTest, BatchedVisionStageMatchesOneImageAtATime) {
  auto& tiny = SharedTinyModel();
  std::vector<PixelValues> images(2);
  for (size_t i = 0; i < images.size(); ++i) {
    images[i].size = tiny.manifest.image.size;
    images[i].chw.resize(3ull * images[i].size * images[i].size);
    for (size_t j = 0; j < images[i].chw.size(); ++j)
      images[i].chw[j] = 0.01f * static_cast<float>((j * (i + 3)) % 97) - 0.4f;
  }
  const std::vector<std::vector<int32_t>> qformer_ids = {
      tiny.qformer_tokenizer->Encode("what is in the picture"),
      tiny.qformer_tokenizer->Encode("")};
  ASSERT_GT(qformer_ids[0].size(), qformer_ids[1].size());
  auto features = tiny.model->EncodeVision({&images[0], &images[1]});
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->size(), 2u);
  EXPECT_GT((*features)[0].bytes(), 0u);
  auto batched = tiny.model->QueryImages(*features, qformer_ids);
  ASSERT_TRUE(batched.ok()) << batched.status();

  const std::vector<int32_t> prompt = tiny.lm_tokenizer->EncodePrompt("hi");
  ASSERT_TRUE(tiny.model->AllocateKvCache(16, 16).ok());
  const std::vector<int> blocks = {0, 1, 2, 3};
  for (size_t i = 0; i < images.size(); ++i) {
    auto single = tiny.model->EncodeImage(images[i], qformer_ids[i]);
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_LT(MaxDiff(PrefillLogits(*tiny.model, *single, prompt, blocks),
                      PrefillLogits(*tiny.model, (*batched)[i], prompt, blocks)),
              1e-4)
        << "row " << i;
  }
  EXPECT_EQ(
      tiny.model->QueryImages(*features, {qformer_ids[0]}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iblip::model
