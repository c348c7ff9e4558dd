#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/runtime/package.h"
#include "model/runtime/sentencepiece_shim.h"

namespace iblip::model {

// The language model's tokenizer: SentencePiece plus the package's special
// and added tokens. Immutable after Load; thread-safe.
class LmTokenizer {
 public:
  // `shim_path`: the iblip_spm_shim module; empty = the built-in default
  // (IBLIP_SPM_SHIM env var, else the path baked in at build time).
  static absl::StatusOr<std::unique_ptr<LmTokenizer>> Load(
      const LmTokenizerSpec& spec, const std::string& shim_path = "");

  // Prompt ids exactly as the processor makes them: BOS prepended / EOS
  // appended as the package says. With max_length > 0 the text part is cut
  // from the left so that the whole fits (truncation_side "left").
  // A special or added token's string in the text ("</s>", "[PAD]") becomes
  // that token, as in Hugging Face, unless the spec says
  // special_tokens_as_text.
  std::vector<int32_t> EncodePrompt(absl::string_view text,
                                    int max_length = 0) const;

  // Text of `ids` as Hugging Face's decode(ids, skip_special_tokens=True):
  // special and added tokens skipped, the prefix space of the first piece
  // removed, and for T5 clean_up_tokenization (" ." -> ".") and strip().
  std::string Decode(absl::Span<const int32_t> ids) const;

  // Decode's two stages, for decoding incrementally (IncrementalDecoder):
  // Decode(ids) is DecodeWithoutCleanUp(ids), then CleanUpTokenizationSpaces
  // when cleans_up_spaces(), then strip() when strips_whitespace() (see
  // text_cleanup.h).
  std::string DecodeWithoutCleanUp(absl::Span<const int32_t> ids) const;
  bool cleans_up_spaces() const { return spec_.clean_up_tokenization_spaces; }
  bool strips_whitespace() const { return spec_.t5; }

  // The token string of one id ("▁What", "[PAD]").
  std::string TokenString(int32_t id) const;

  int vocab_size() const;

  ~LmTokenizer();
  LmTokenizer(const LmTokenizer&) = delete;
  LmTokenizer& operator=(const LmTokenizer&) = delete;

 private:
  LmTokenizer(LmTokenizerSpec spec, void* module,
              std::unique_ptr<SentencePieceModel> model);

  LmTokenizerSpec spec_;
  void* module_;  // dlopen handle; closed after model_ is destroyed
  std::unique_ptr<SentencePieceModel> model_;
  std::unordered_set<int32_t> special_ids_;  // skipped by Decode
  std::vector<SpecialToken> split_tokens_;   // matched in prompts; may be none
};

// Where the shim module is looked for when Load gets no path.
std::string DefaultSentencePieceShimPath();

}  // namespace iblip::model
