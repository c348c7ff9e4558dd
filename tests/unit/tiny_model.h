#pragma once

// The tiny random package's TorchScript model, loaded once per test binary
// (loading costs ~100 ms), beside its tokenizers.

#include <memory>

#include "model/runtime/instructblip_model.h"
#include "tests/unit/test_package.h"

namespace iblip::testing {

struct TinyModel {
  model::PackageManifest manifest;
  std::unique_ptr<model::InstructBlipModel> model;
  const model::LmTokenizer* lm_tokenizer = nullptr;
  const model::WordPieceTokenizer* qformer_tokenizer = nullptr;
};
TinyModel& SharedTinyModel();

}  // namespace iblip::testing
