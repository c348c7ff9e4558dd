#include "tests/unit/test_package.h"

#include <algorithm>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <stdexcept>

namespace iblip::testing {

std::string TinyPackageDir() { return IBLIP_TINY_PACKAGE_DIR; }

std::string FixturesDir() { return IBLIP_FIXTURES_DIR; }
std::string TestDevice() {
  const char* device = std::getenv("IBLIP_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : "cpu";
}

std::string FixturePackageDir(const std::string& checkpoint) {
  return std::string(IBLIP_FIXTURE_PACKAGES_DIR) + "/" + checkpoint;
}

std::string FixtureCaseName(const std::string& checkpoint,
                            const std::string& name) {
  std::string joined = checkpoint + "_" + name;
  std::replace(joined.begin(), joined.end(), '-', '_');
  return joined;
}

NpyArray ReadNpyOrDie(const std::string& path) {
  const std::string bytes = ReadFileOrDie(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    throw std::runtime_error(path + ": not a .npy file");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0;
  const size_t offset = major == 1 ? 10 : 12;
  for (size_t i = 0; i < offset - 8; ++i) {
    header_len |= size_t{static_cast<unsigned char>(bytes[8 + i])} << (8 * i);
  }
  const std::string header = bytes.substr(offset, header_len);
  if (header.find("'<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos) {
    throw std::runtime_error(path + ": expected C-order float32, header " +
                             header);
  }
  NpyArray array;
  const size_t open = header.find('(', header.find("'shape'"));
  const size_t close = header.find(')', open);
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  std::string dim;
  size_t count = 1;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(' ') == std::string::npos) continue;
    array.shape.push_back(std::stoll(dim));
    count *= static_cast<size_t>(array.shape.back());
  }
  const size_t data_offset = offset + header_len;
  if (bytes.size() - data_offset != count * sizeof(float)) {
    throw std::runtime_error(path + ": size does not match its shape");
  }
  array.data.resize(count);
  std::memcpy(array.data.data(), bytes.data() + data_offset,
              count * sizeof(float));
  return array;
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

const TinyTokenizers& SharedTinyTokenizers() {
  static const TinyTokenizers* tiny = [] {
    auto* t = new TinyTokenizers;
    auto manifest = model::LoadPackageManifest(TinyPackageDir());
    if (!manifest.ok()) throw std::runtime_error(manifest.status().ToString());
    t->manifest = *manifest;
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
