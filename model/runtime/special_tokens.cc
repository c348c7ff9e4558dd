#include "model/runtime/special_tokens.h"

namespace iblip::model {
namespace {

// The code point starting at text[at] and its length in bytes; invalid
// UTF-8 reads as one byte that is not whitespace.
std::pair<uint32_t, size_t> CodePointAt(absl::string_view text, size_t at) {
  const auto byte = [&](size_t i) {
    return static_cast<unsigned char>(text[i]);
  };
  const unsigned char lead = byte(at);
  size_t length = lead < 0x80 ? 1 : lead >> 5 == 6 ? 2 : lead >> 4 == 14 ? 3
                                : lead >> 3 == 30                        ? 4
                                                                         : 0;
  if (length == 0 || at + length > text.size()) return {0xFFFD, 1};
  uint32_t cp = length == 1 ? lead : lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i) {
    if ((byte(at + i) & 0xC0) != 0x80) return {0xFFFD, 1};
    cp = (cp << 6) | (byte(at + i) & 0x3F);
  }
  return {cp, length};
}

// Python's str.isspace().
bool IsPythonSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) ||
         cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

absl::string_view StripLeft(absl::string_view text) {
  while (!text.empty()) {
    const auto [cp, length] = CodePointAt(text, 0);
    if (!IsPythonSpace(cp)) break;
    text.remove_prefix(length);
  }
  return text;
}

absl::string_view StripRight(absl::string_view text) {
  while (!text.empty()) {
    // Back up to the last code point's first byte.
    size_t start = text.size() - 1;
    while (start > 0 && text.size() - start < 4 &&
           (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
      --start;
    }
    const auto [cp, length] = CodePointAt(text, start);
    if (start + length != text.size() || !IsPythonSpace(cp)) break;
    text.remove_suffix(length);
  }
  return text;
}

}  // namespace

std::vector<TextPiece> SplitOnSpecialTokens(
    absl::string_view text, const std::vector<SpecialToken>& tokens) {
  // Cut first (leftmost, then longest), strip afterwards, as the trie does.
  struct Cut {
    TextPiece piece;
    const SpecialToken* token = nullptr;
  };
  std::vector<Cut> cuts;
  size_t plain_start = 0;
  for (size_t at = 0; at < text.size();) {
    const SpecialToken* best = nullptr;
    for (const SpecialToken& token : tokens) {
      if (token.text.size() > (best ? best->text.size() : 0) &&
          text.substr(at, token.text.size()) == token.text) {
        best = &token;
      }
    }
    if (best == nullptr) {
      ++at;
      continue;
    }
    if (at > plain_start)
      cuts.push_back({{text.substr(plain_start, at - plain_start)}, nullptr});
    cuts.push_back({{text.substr(at, best->text.size()), best->id}, best});
    at += best->text.size();
    plain_start = at;
  }
  if (plain_start < text.size())
    cuts.push_back({{text.substr(plain_start)}, nullptr});

  for (size_t i = 0; i < cuts.size(); ++i) {
    const SpecialToken* token = cuts[i].token;
    if (token == nullptr) continue;
    if (token->rstrip && i + 1 < cuts.size() && !cuts[i + 1].token)
      cuts[i + 1].piece.text = StripLeft(cuts[i + 1].piece.text);
    if (token->lstrip && i > 0 && !cuts[i - 1].token)
      cuts[i - 1].piece.text = StripRight(cuts[i - 1].piece.text);
  }
  std::vector<TextPiece> pieces;
  for (const Cut& cut : cuts) {
    if (cut.token != nullptr || !cut.piece.text.empty())
      pieces.push_back(cut.piece);
  }
  return pieces;
}

}  // namespace iblip::model
