#pragma once

// The text rewriting Hugging Face's decode() applies after SentencePiece:
// clean_up_tokenization (" ." -> ".") and, for T5, strip(). Kept beside the
// rule that tells where decoded text may be cut so that both can be applied
// piecewise (IncrementalDecoder), because that rule is only true for these
// exact rewrites.

#include <string>

#include "absl/strings/string_view.h"

namespace iblip::model {

// transformers' clean_up_tokenization: " ." -> ".", " ' " -> "'",
// " n't" -> "n't", ... (each rule one left-to-right pass, in HF's order).
std::string CleanUpTokenizationSpaces(std::string text);

// The whitespace Python's str.strip() removes from SentencePiece text.
bool IsStrippedWhitespace(char c);
absl::string_view StripLeadingWhitespace(absl::string_view text);
absl::string_view StripTrailingWhitespace(absl::string_view text);

// True when text may be cut between the adjacent bytes `before` and `after`
// (`after` starts a UTF-8 character): for every A ending in `before` and B
// starting with `after`, clean_up(A + B) == clean_up(A) + clean_up(B), and
// clean_up(A) still ends in `before` (not whitespace), so strip() of the
// whole trims only A's front and B's back.
//
// Why it holds: every rule only deletes spaces, and every rule's pattern is a
// space followed by some of ".?!,'ntmsvre". When neither byte is whitespace
// they are never deleted and stay adjacent through all the passes, so a
// pattern occurrence crossing the cut would hold them as consecutive pattern
// bytes; the pairs refused below are the only such non-space pairs.
bool IsCleanUpBoundary(char before, char after);

}  // namespace iblip::model
