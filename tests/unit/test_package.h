#pragma once

// Shared helpers for the unit tests: the tiny random package built by CMake,
// the shared reference fixtures, and encoded test images. Torch-free (the
// sanitizer build links it); the loaded model is in tiny_model.h.

#include <memory>
#include <string>

#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/wordpiece_tokenizer.h"

namespace iblip::testing {

// build/tiny-random-package (made by model/python/iblip_model/tiny_random.py).
std::string TinyPackageDir();
// tests/fixtures (the repository's copy of the Hugging Face reference outputs)
// and the packages the build exported from its checkpoints.
std::string FixturesDir();
// The torch device the model tests load packages on: IBLIP_TEST_DEVICE
// (runtime.device's syntax), default cpu. bench/gpu/run.sh runs the parity
// tests with cuda.
std::string TestDevice();
std::string FixturePackageDir(const std::string& checkpoint);
// A GTest-safe name for a fixture case ("tiny_llama_eos232_beam3").
std::string FixtureCaseName(const std::string& checkpoint,
                            const std::string& name);

// A float32 little-endian C-order .npy file.
struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
NpyArray ReadNpyOrDie(const std::string& path);

std::string ReadFileOrDie(const std::string& path);
// A width x height image of one RGB color, encoded as `extension` (".png").
std::string EncodeSolidImage(int width, int height, int r, int g, int b,
                             const std::string& extension = ".png");

// The tiny package's manifest and tokenizers, loaded once per test binary.
struct TinyTokenizers {
  model::PackageManifest manifest;
  std::unique_ptr<model::LmTokenizer> lm_tokenizer;
  std::unique_ptr<model::WordPieceTokenizer> qformer_tokenizer;
};
const TinyTokenizers& SharedTinyTokenizers();

}  // namespace iblip::testing
