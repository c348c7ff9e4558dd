#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "model/runtime/package.h"

namespace iblip::model {

// One part of a text cut at special-token strings: either plain text to
// tokenize (special_id < 0) or one special token.
struct TextPiece {
  absl::string_view text;
  int32_t special_id = -1;
};

// The cut Hugging Face's slow tokenizers make before tokenizing (their added
// tokens trie, transformers 4.40): scanning from the left, the longest token
// string that starts at each position is taken; a token with rstrip/lstrip
// also removes the whitespace (Python's str.isspace) at the start of the
// text after it / the end of the text before it; empty text parts are
// dropped. The pieces view `text`, which must outlive them.
std::vector<TextPiece> SplitOnSpecialTokens(
    absl::string_view text, const std::vector<SpecialToken>& tokens);

}  // namespace iblip::model
