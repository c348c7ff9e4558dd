// Fuzz target: the LM tokenizer and the streaming decoder. The first byte
// picks the mode: encode the rest as a prompt, or read it as token ids (two
// bytes each). Either way the ids are streamed through a TextStreamer; the
// streamed text must equal the whole decode (no stop), or be a prefix of it
// that ends right before the stop sequence.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/text_streamer.h"

namespace {

const iblip::model::LmTokenizer& Tokenizer() {
  static const iblip::model::LmTokenizer* tokenizer = [] {
    auto manifest = iblip::model::LoadPackageManifest(IBLIP_TINY_PACKAGE_DIR);
    if (!manifest.ok()) std::abort();
    auto loaded = iblip::model::LmTokenizer::Load(manifest->lm_tokenizer);
    if (!loaded.ok()) std::abort();
    return loaded->release();
  }();
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& tokenizer = Tokenizer();
  // At most 1 KiB of text and 128 streamed ids: the streamer re-decodes its
  // whole sequence per token, so longer inputs only slow the search down.
  const std::string rest(reinterpret_cast<const char*>(data) + 1,
                         std::min<size_t>(size - 1, 1024));
  std::vector<int32_t> ids;
  if (data[0] % 2 == 0) {
    ids = tokenizer.EncodePrompt(rest);
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) __builtin_trap();
    }
  } else {
    for (size_t i = 0; i + 1 < rest.size(); i += 2) {
      const int raw = static_cast<uint8_t>(rest[i]) << 8 |
                      static_cast<uint8_t>(rest[i + 1]);
      ids.push_back(raw % tokenizer.vocab_size());
    }
  }
  if (ids.size() > 128) ids.resize(128);
  // A stop sequence from the input's last bytes (a third of the inputs have
  // none).
  std::vector<std::string> stops;
  if (data[0] % 3 != 0 && rest.size() >= 3)
    stops.push_back(rest.substr(rest.size() - 3));

  iblip::model::TextStreamer streamer(tokenizer, stops);
  std::string streamed;
  bool stopped = false;
  for (int32_t id : ids) {
    auto delta = streamer.Append(id);
    streamed += delta.text;
    if (delta.stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped) streamed += streamer.Finish();
  if (streamed != streamer.text()) __builtin_trap();
  const std::string whole = tokenizer.Decode(ids);
  if (!stopped && streamed != whole) __builtin_trap();
  if (stopped && whole.compare(0, streamed.size(), streamed) != 0)
    __builtin_trap();
  return 0;
}
