#include "model/runtime/text_cleanup.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace iblip::model {
namespace {

TEST(TextCleanupTest, CleanUpFollowsTransformers) {
  // Python: each .replace() of clean_up_tokenization in turn.
  EXPECT_EQ(CleanUpTokenizationSpaces("a . b ? c ! d , e"), "a. b? c! d, e");
  EXPECT_EQ(CleanUpTokenizationSpaces("do n't , it 's we 've they 're I 'm"),
            "don't, it's we've they're I'm");
  EXPECT_EQ(CleanUpTokenizationSpaces("a ' b"), "a'b");
  // " ' " first makes " n" + "'t" into " n't" for a later rule.
  EXPECT_EQ(CleanUpTokenizationSpaces("x n ' t"), "xn't");
  // One pass per rule: "  ." keeps one space.
  EXPECT_EQ(CleanUpTokenizationSpaces("a  ."), "a .");
}

TEST(TextCleanupTest, StripRemovesPythonWhitespace) {
  EXPECT_EQ(StripLeadingWhitespace(" \t\n\r\f\vab c "), "ab c ");
  EXPECT_EQ(StripTrailingWhitespace(" ab c \t\n\r\f\v"), " ab c");
  EXPECT_EQ(StripTrailingWhitespace("   "), "");
}

// The property IncrementalDecoder relies on, over every short string of the
// bytes that matter to the rules (and random longer ones): wherever
// IsCleanUpBoundary allows a cut, cleaning up the parts gives the whole's
// clean-up.
TEST(TextCleanupTest, CutsAtBoundariesCleanUpLikeTheWhole) {
  const std::string alphabet = " '.,!?ntmsvre\nx";
  auto check = [](const std::string& text) {
    for (size_t cut = 1; cut < text.size(); ++cut) {
      if (!IsCleanUpBoundary(text[cut - 1], text[cut])) continue;
      const std::string head = CleanUpTokenizationSpaces(text.substr(0, cut));
      ASSERT_EQ(head + CleanUpTokenizationSpaces(text.substr(cut)),
                CleanUpTokenizationSpaces(text))
          << "'" << text << "' cut at " << cut;
      ASSERT_EQ(head.back(), text[cut - 1]);  // still ends in `before`
    }
  };
  std::string text;
  for (int length = 1; length <= 5; ++length) {
    text.assign(length, alphabet[0]);
    std::vector<size_t> digits(length, 0);
    while (true) {
      for (int i = 0; i < length; ++i) text[i] = alphabet[digits[i]];
      check(text);
      int i = 0;
      while (i < length && ++digits[i] == alphabet.size()) digits[i++] = 0;
      if (i == length) break;
    }
  }
  std::mt19937 rng(1);
  for (int i = 0; i < 20000; ++i) {
    text.assign(6 + rng() % 20, ' ');
    for (char& c : text) c = alphabet[rng() % alphabet.size()];
    check(text);
  }
}

// Each pair the boundary refuses really can join a pattern across the cut.
TEST(TextCleanupTest, RefusedPairsCanJoinAPatternAcrossTheCut) {
  const std::pair<std::string, size_t> kCrossing[] = {
      {"do n't", 4}, {"do n't", 5}, {"I 'm", 3},     {"it 's", 4},
      {"we 've", 4}, {"we 've", 5}, {"they 're", 6}, {"they 're", 7},
      {"a . b", 2},  {"a ' b", 2},  {"a ' b", 3}};
  for (const auto& [text, cut] : kCrossing) {
    EXPECT_FALSE(IsCleanUpBoundary(text[cut - 1], text[cut])) << text << cut;
    EXPECT_NE(CleanUpTokenizationSpaces(text.substr(0, cut)) +
                  CleanUpTokenizationSpaces(text.substr(cut)),
              CleanUpTokenizationSpaces(text))
        << text << " cut at " << cut;
  }
  EXPECT_TRUE(IsCleanUpBoundary('o', 'n'));
  // Never inside a UTF-8 character.
  EXPECT_FALSE(IsCleanUpBoundary('\xC3', '\xA9'));
  EXPECT_TRUE(IsCleanUpBoundary('\xA9', 'x'));
}

}  // namespace
}  // namespace iblip::model
