#include "tests/unit/tiny_model.h"

#include <stdexcept>

namespace iblip::testing {

TinyModel& SharedTinyModel() {
  static TinyModel* tiny = [] {
    const TinyTokenizers& tokenizers = SharedTinyTokenizers();
    auto* t = new TinyModel;
    t->manifest = tokenizers.manifest;
    auto loaded = model::InstructBlipModel::Load(
        t->manifest, model::RuntimeOptions{TestDevice(), 1});
    if (!loaded.ok()) throw std::runtime_error(loaded.status().ToString());
    t->model = std::move(*loaded);
    t->lm_tokenizer = tokenizers.lm_tokenizer.get();
    t->qformer_tokenizer = tokenizers.qformer_tokenizer.get();
    return t;
  }();
  return *tiny;
}

}  // namespace iblip::testing
