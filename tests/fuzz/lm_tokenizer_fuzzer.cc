// Fuzz target: the LM tokenizers (LLaMA-style and T5) and the streaming
// decoder. The first byte picks the tokenizer and the mode: encode the rest
// as a prompt, or read it as token ids (two bytes each). Either way the ids
// go through an IncrementalDecoder, whose final text plus tail must equal the
// decode of the ids so far after each of the first ids, and a TextStreamer;
// the streamed text must equal the whole decode (no stop), or, when it
// stopped, the decode of the ids up to then must be that text and the stop.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "model/runtime/incremental_decoder.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/text_streamer.h"

namespace {

const iblip::model::LmTokenizer* LoadTokenizer(const std::string& package) {
  auto manifest = iblip::model::LoadPackageManifest(package);
  if (!manifest.ok()) std::abort();
  auto loaded = iblip::model::LmTokenizer::Load(manifest->lm_tokenizer);
  if (!loaded.ok()) std::abort();
  return loaded->release();
}

const iblip::model::LmTokenizer& Tokenizer(bool t5) {
  static const iblip::model::LmTokenizer* llama =
      LoadTokenizer(IBLIP_TINY_PACKAGE_DIR);
  static const iblip::model::LmTokenizer* t5_tokenizer =
      LoadTokenizer(std::string(IBLIP_FIXTURE_PACKAGES_DIR) + "/tiny-t5");
  return t5 ? *t5_tokenizer : *llama;
}

// Ids checked against a from-scratch decode after each one.
constexpr size_t kPrefixChecks = 24;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& tokenizer = Tokenizer((data[0] >> 2) % 2 == 1);
  // At most 1 KiB of text and 128 streamed ids: longer inputs only slow the
  // search down.
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

  // The first ids one by one against a from-scratch decode of each prefix
  // (quadratic, so only a few; the streamer below covers the whole).
  iblip::model::IncrementalDecoder decoder(tokenizer);
  std::string final_text;
  for (size_t n = 1; n <= std::min(ids.size(), kPrefixChecks); ++n) {
    final_text += decoder.Append(ids[n - 1]);
    if (final_text + decoder.tail() !=
        tokenizer.Decode(absl::MakeConstSpan(ids).first(n))) {
      __builtin_trap();
    }
  }
  const std::string whole = tokenizer.Decode(ids);

  // A stop sequence from the input's last bytes (a third of the inputs have
  // none).
  std::vector<std::string> stops;
  if (data[0] % 3 != 0 && rest.size() >= 3)
    stops.push_back(rest.substr(rest.size() - 3));
  iblip::model::TextStreamer streamer(tokenizer, stops);
  std::string streamed;
  size_t stopped_at = ids.size();  // the id whose decode held the stop
  for (size_t i = 0; i < ids.size(); ++i) {
    auto delta = streamer.Append(ids[i]);
    streamed += delta.text;
    if (delta.stopped) {
      stopped_at = i;
      break;
    }
  }
  if (stopped_at == ids.size()) {
    streamed += streamer.Finish();
    if (streamed != whole) __builtin_trap();
  } else {
    // The decode of the ids up to the stop: the text, then the stop.
    const std::string decoded =
        tokenizer.Decode(absl::MakeConstSpan(ids).first(stopped_at + 1));
    if (decoded.compare(0, streamed.size(), streamed) != 0 ||
        decoded.compare(streamed.size(), stops[0].size(), stops[0]) != 0) {
      __builtin_trap();
    }
  }
  if (streamed != streamer.text()) __builtin_trap();
  return 0;
}
