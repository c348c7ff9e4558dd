#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/runtime/package.h"

namespace iblip::model {

// The Q-Former's tokenizer: Hugging Face's BertTokenizer (bert-base-uncased)
// with utf8proc for Unicode: drop control characters and U+FFFD, map
// whitespace to spaces, isolate CJK ideographs, NFC, split on whitespace,
// lower-case and strip accents (NFD, drop Mn), split punctuation (ASCII
// symbols and Unicode P*), then greedy longest-match WordPiece with "##"
// continuations, [UNK] for words with no pieces or over 100 characters,
// [CLS] ... [SEP] and left truncation. Immutable; thread-safe.
class WordPieceTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Load(
      const QformerTokenizerSpec& spec);

  // [CLS] pieces... [SEP], cut from the left to max_length (the spec's when 0).
  // Special-token strings in the text ("[SEP]", "[DEC]") become their ids,
  // as in Hugging Face, unless the spec says special_tokens_as_text.
  std::vector<int32_t> Encode(absl::string_view text, int max_length = 0) const;

  // The words BERT's basic tokenizer produces (before WordPiece).
  std::vector<std::string> BasicTokenize(absl::string_view text) const;

  std::string TokenString(int32_t id) const;
  int vocab_size() const { return static_cast<int>(tokens_.size()); }

 private:
  explicit WordPieceTokenizer(QformerTokenizerSpec spec)
      : spec_(std::move(spec)) {}
  void AppendWordPieces(const std::string& word,
                        std::vector<int32_t>& ids) const;
  int32_t IdOf(const std::string& token) const;

  QformerTokenizerSpec spec_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t cls_id_ = -1, sep_id_ = -1, unk_id_ = -1;
  std::vector<SpecialToken> split_tokens_;  // matched in the text; may be none
};

}  // namespace iblip::model
