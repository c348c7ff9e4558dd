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

// The Q-Former's BERT WordPiece tokenizer (bert-base-uncased style):
// lower-casing, whitespace and punctuation splitting, greedy longest-match
// word pieces, [CLS] ... [SEP], left truncation. Immutable; thread-safe.
class WordPieceTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Load(
      const QformerTokenizerSpec& spec);

  // [CLS] pieces... [SEP], truncated from the left to max_length.
  std::vector<int32_t> Encode(absl::string_view text) const;

  std::string TokenString(int32_t id) const;
  int vocab_size() const { return static_cast<int>(tokens_.size()); }

 private:
  explicit WordPieceTokenizer(QformerTokenizerSpec spec)
      : spec_(std::move(spec)) {}
  void AppendWordPieces(absl::string_view word,
                        std::vector<int32_t>& ids) const;
  int32_t IdOf(absl::string_view token) const;

  QformerTokenizerSpec spec_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t cls_id_ = -1, sep_id_ = -1, unk_id_ = -1;
};

}  // namespace iblip::model
