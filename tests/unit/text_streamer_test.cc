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

// Appends ids until a stop sequence shows up; the deltas concatenated.
struct Streamed {
  std::string text;
  bool stopped = false;
};
Streamed StreamUntilStop(TextStreamer& streamer,
                         const std::vector<int32_t>& ids) {
  Streamed out;
  for (int32_t id : ids) {
    TextStreamer::Delta delta = streamer.Append(id);
    out.text += delta.text;
    if ((out.stopped = delta.stopped)) break;
  }
  return out;
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
  const Streamed streamed = StreamUntilStop(streamer, ids);
  EXPECT_TRUE(streamed.stopped);
  EXPECT_EQ(streamed.text, "a red circle an");
}

TEST(TextStreamerTest, HeldBackPrefixIsReleasedWhenItIsNotAStop) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  const auto ids = WithoutBos(tokenizer.EncodePrompt("one two three"));
  TextStreamer streamer(tokenizer, {"three four"});
  std::string streamed;
  for (int32_t id : ids) streamed += streamer.Append(id).text;
  // "three" could still become "three four": held back, and only that (the
  // space before it is not part of any stop, so it is out already).
  EXPECT_EQ(streamed, "one two ");
  streamed += streamer.Finish();
  EXPECT_EQ(streamed, "one two three");
}

TEST(TextStreamerTest, StopSequenceMadeOfByteFallbackCharacters) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  // Japanese is byte fallback for the tiny tokenizer: one id per byte.
  const auto ids =
      WithoutBos(tokenizer.EncodePrompt("ok \xE6\x97\xA5\xE6\x9C\xAC ok"));
  TextStreamer streamer(tokenizer, {"\xE6\x9C\xAC"});
  const Streamed streamed = StreamUntilStop(streamer, ids);
  EXPECT_TRUE(streamed.stopped);
  EXPECT_EQ(streamed.text, "ok \xE6\x97\xA5");
  EXPECT_EQ(streamer.Finish(), "");
  EXPECT_EQ(streamer.text(), streamed.text);
}

TEST(TextStreamerTest, StreamsAsItGoesAndNothingAfterTheEnd) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  const std::string text =
      "a red circle and a blue square on the left of a green triangle";
  const auto ids = WithoutBos(tokenizer.EncodePrompt(text));
  TextStreamer streamer(tokenizer, {"xyz"});
  std::string streamed;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    streamed += streamer.Append(ids[i]).text;
  }
  // Text is out before the end: all of it but the last character, which
  // this tokenizer's clean-up (" ." -> ".") may still join with what comes
  // next. Only what could start a stop would be held too, and none could.
  const std::string so_far =
      tokenizer.Decode(std::vector<int32_t>(ids.begin(), ids.end() - 1));
  ASSERT_TRUE(tokenizer.cleans_up_spaces());
  EXPECT_EQ(streamed, so_far.substr(0, so_far.size() - 1));
  streamed += streamer.Append(ids.back()).text;
  streamed += streamer.Finish();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamer.Append(ids[0]).text, "");  // ended: adds nothing
  EXPECT_EQ(streamer.Finish(), "");
  EXPECT_EQ(streamer.text(), text);
}

// A long generation: the deltas still add up exactly (the streamer keeps
// only a short window of ids, never the whole sequence's text, to decode).
TEST(TextStreamerTest, LongSequenceWithStopsNearTheEnd) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "the red circle is left of a blue star \xE6\x97\xA5 ";
  text += "the end. more";
  const auto ids = WithoutBos(tokenizer.EncodePrompt(text));
  ASSERT_GT(ids.size(), 2000u);
  TextStreamer streamer(tokenizer, {"the end.", "never"});
  const Streamed streamed = StreamUntilStop(streamer, ids);
  EXPECT_TRUE(streamed.stopped);
  EXPECT_EQ(streamed.text, text.substr(0, text.find("the end.")));
}

}  // namespace
}  // namespace iblip::model
