// Fuzz target: the Q-Former's BERT tokenizer on arbitrary bytes. Ids stay in
// the vocabulary and max_length is honoured.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "model/runtime/package.h"
#include "model/runtime/wordpiece_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const iblip::model::WordPieceTokenizer* tokenizer = [] {
    auto manifest = iblip::model::LoadPackageManifest(IBLIP_TINY_PACKAGE_DIR);
    if (!manifest.ok()) std::abort();
    auto loaded =
        iblip::model::WordPieceTokenizer::Load(manifest->qformer_tokenizer);
    if (!loaded.ok()) std::abort();
    return loaded->release();
  }();
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  for (int max_length : {0, 16}) {
    const auto ids = tokenizer->Encode(text, max_length);
    if (max_length > 0 && static_cast<int>(ids.size()) > max_length)
      __builtin_trap();
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer->vocab_size()) __builtin_trap();
    }
  }
  return 0;
}
