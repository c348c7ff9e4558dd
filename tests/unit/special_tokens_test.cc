// Cutting text at special-token strings, as Hugging Face's slow tokenizers do
// before tokenizing (transformers 4.40's added-tokens trie).
#include "model/runtime/special_tokens.h"

#include <gtest/gtest.h>

#include <random>

namespace iblip::model {
namespace {

// "text" for plain pieces, "<id>" for special ones.
std::vector<std::string> Cut(absl::string_view text,
                             const std::vector<SpecialToken>& tokens) {
  std::vector<std::string> out;
  for (const TextPiece& piece : SplitOnSpecialTokens(text, tokens)) {
    out.push_back(piece.special_id >= 0
                      ? "<" + std::to_string(piece.special_id) + ">"
                      : std::string(piece.text));
  }
  return out;
}

using Pieces = std::vector<std::string>;

TEST(SpecialTokensTest, CutsAtEveryOccurrenceAndKeepsTheTextBetween) {
  const std::vector<SpecialToken> tokens = {{"</s>", 2}, {"[PAD]", 1000}};
  EXPECT_EQ(Cut("Answer </s> and [PAD][PAD]", tokens),
            (Pieces{"Answer ", "<2>", " and ", "<1000>", "<1000>"}));
  EXPECT_EQ(Cut("a</s>b", tokens), (Pieces{"a", "<2>", "b"}));
  EXPECT_EQ(Cut("</s", tokens), (Pieces{"</s"}));
  EXPECT_EQ(Cut("", tokens), (Pieces{}));
  EXPECT_EQ(Cut("no specials", {}), (Pieces{"no specials"}));
}

TEST(SpecialTokensTest, TheLongestTokenAtTheLeftmostPositionWins) {
  const std::vector<SpecialToken> tokens = {
      {"<extra_id_1>", 1}, {"<extra_id_10>", 10}, {"id_1", 7}};
  EXPECT_EQ(Cut("x<extra_id_10>y", tokens), (Pieces{"x", "<10>", "y"}));
  EXPECT_EQ(Cut("<extra_id_1>0", tokens), (Pieces{"<1>", "0"}));
}

TEST(SpecialTokensTest, StripFlagsEatNeighbouringWhitespace) {
  SpecialToken extra{"<extra_id_0>", 5, /*lstrip=*/true, /*rstrip=*/true};
  SpecialToken plain{"</s>", 1};
  EXPECT_EQ(Cut("a \t<extra_id_0>\n b </s> c", {extra, plain}),
            (Pieces{"a", "<5>", "b ", "<1>", " c"}));
  // Python's str.isspace(): U+3000 and U+00A0 are whitespace too.
  EXPECT_EQ(Cut("a\xE3\x80\x80<extra_id_0>\xC2\xA0"
                "b",
                {extra}),
            (Pieces{"a", "<5>", "b"}));
  // A piece stripped to nothing is dropped.
  EXPECT_EQ(Cut("  <extra_id_0>  ", {extra}), (Pieces{"<5>"}));
}

TEST(SpecialTokensTest, ArbitraryBytesNeverBreakIt) {
  const std::vector<SpecialToken> tokens = {{"</s>", 2, true, true},
                                            {"\xE3\x80\x80", 3, true, true}};
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string text(rng() % 24, '\0');
    for (char& c : text)
      c = "</s> \xE3\x80\x80\xC2\xA0"[rng() % 11];
    size_t total = 0;
    for (const TextPiece& piece : SplitOnSpecialTokens(text, tokens)) {
      EXPECT_FALSE(piece.special_id < 0 && piece.text.empty());
      total += piece.text.size();
    }
    EXPECT_LE(total, text.size());
  }
}

}  // namespace
}  // namespace iblip::model
