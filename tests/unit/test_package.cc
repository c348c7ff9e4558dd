#include "tests/unit/test_package.h"

#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <stdexcept>

namespace iblip::testing {

std::string TinyPackageDir() { return IBLIP_TINY_PACKAGE_DIR; }

std::string FixturesDir() {
  return std::string(IBLIP_SOURCE_DIR) + "/../shared/fixtures";
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string EncodeSolidImage(int width, int height, int r, int g, int b,
                             const std::string& extension) {
  cv::Mat image(height, width, CV_8UC3, cv::Scalar(b, g, r));  // OpenCV is BGR
  std::vector<uchar> bytes;
  cv::imencode(extension, image, bytes);
  return std::string(bytes.begin(), bytes.end());
}

TinyModel& SharedTinyModel() {
  static TinyModel* tiny = [] {
    auto* t = new TinyModel;
    auto manifest = model::LoadPackageManifest(TinyPackageDir());
    if (!manifest.ok()) throw std::runtime_error(manifest.status().ToString());
    t->manifest = *manifest;
    auto loaded = model::InstructBlipModel::Load(
        t->manifest, model::RuntimeOptions{"cpu", 1});
    if (!loaded.ok()) throw std::runtime_error(loaded.status().ToString());
    t->model = std::move(*loaded);
    auto lm = model::LmTokenizer::Load(t->manifest.lm_tokenizer);
    if (!lm.ok()) throw std::runtime_error(lm.status().ToString());
    t->lm_tokenizer = std::move(*lm);
    auto qformer =
        model::WordPieceTokenizer::Load(t->manifest.qformer_tokenizer);
    if (!qformer.ok()) throw std::runtime_error(qformer.status().ToString());
    t->qformer_tokenizer = std::move(*qformer);
    return t;
  }();
  return *tiny;
}

}  // namespace iblip::testing
