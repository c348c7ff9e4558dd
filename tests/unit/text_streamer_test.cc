#include "model/runtime/text_streamer.h"

#include <gtest/gtest.h>

#include "tests/unit/test_package.h"

namespace iblip::model {
namespace {

using testing::SharedTinyTokenizers;

std::vector<int32_t> WithoutBos(std::vector<int32_t> ids) {
  ids.erase(ids.begin());
  return ids;
}

TEST(TextStreamerTest, DeltasConcatenateToTheFullDecode) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  const std::string text =
      "the red circle is left of a blue star \xE6\x97\xA5 \xF0\x9F\x98\x80 ok";
  const auto ids = WithoutBos(tokenizer.EncodePrompt(text));
  TextStreamer streamer(tokenizer, {});
  std::string streamed;
  for (int32_t id : ids) {
    auto delta = streamer.Append(id);
    EXPECT_FALSE(delta.stopped);
    // Every delta is whole UTF-8 characters: no U+FFFD ever reaches a client.
    EXPECT_EQ(delta.text.find("\xEF\xBF\xBD"), std::string::npos);
    streamed += delta.text;
  }
  streamed += streamer.Finish();
  EXPECT_EQ(streamed, text);
}

TEST(TextStreamerTest, StopSequenceSpanningTokensEndsTheText) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  const auto ids =
      WithoutBos(tokenizer.EncodePrompt("a red circle and a blue square"));
  TextStreamer streamer(tokenizer, {"d a b"});
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
  EXPECT_TRUE(stopped);
  EXPECT_EQ(streamed, "a red circle an");
}

TEST(TextStreamerTest, HeldBackPrefixIsReleasedWhenItIsNotAStop) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  const auto ids = WithoutBos(tokenizer.EncodePrompt("one two three"));
  TextStreamer streamer(tokenizer, {"three four"});
  std::string streamed;
  for (int32_t id : ids) streamed += streamer.Append(id).text;
  // " three" could still become " three four": held back, and only that.
  EXPECT_EQ(streamed, "one two");
  streamed += streamer.Finish();
  EXPECT_EQ(streamed, "one two three");
}

}  // namespace
}  // namespace iblip::model
