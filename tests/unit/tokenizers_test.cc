// The LM tokenizer (SentencePiece behind its dlopen'ed shim) and the Q-Former
// WordPiece tokenizer, against the Hugging Face processor's own outputs in
// ../shared/fixtures/tokens. This binary links gRPC, protobuf and torch: the
// shim keeps SentencePiece's bundled protobuf from clashing with them.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/types/span.h"
#include "model/runtime/incremental_decoder.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/text_streamer.h"
#include "model/runtime/wordpiece_tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_package.h"

namespace iblip::model {
namespace {

using testing::FixturePackageDir;
using testing::FixturesDir;
using testing::SharedTinyTokenizers;

TEST(LmTokenizerTest, PromptStartsWithBosAndRoundTrips) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  auto ids = tokenizer.EncodePrompt("what color is the circle");
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(tokenizer.Decode(ids), "what color is the circle");
  EXPECT_EQ(tokenizer.TokenString(2), "</s>");
  const int32_t pad =
      SharedTinyTokenizers().manifest.lm_tokenizer.added_tokens.at("[PAD]");
  EXPECT_EQ(tokenizer.TokenString(pad), "[PAD]");
  EXPECT_EQ(tokenizer.vocab_size(), pad + 1);
}

TEST(LmTokenizerTest, ByteFallbackRoundTripsNonAscii) {
  const LmTokenizer& tokenizer = *SharedTinyTokenizers().lm_tokenizer;
  const std::string text =
      "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80";
  EXPECT_EQ(tokenizer.Decode(tokenizer.EncodePrompt(text)), text);
}

TEST(LmTokenizerTest, MissingShimOrModelIsAnError) {
  LmTokenizerSpec spec = SharedTinyTokenizers().manifest.lm_tokenizer;
  EXPECT_FALSE(LmTokenizer::Load(spec, "/nonexistent/shim.so").ok());
  spec.model_path = "/nonexistent/tokenizer.model";
  EXPECT_FALSE(LmTokenizer::Load(spec).ok());
}

// Tokenizers of the packages exported from the fixture checkpoints.
struct FixtureTokenizers {
  std::unique_ptr<LmTokenizer> lm;
  std::unique_ptr<WordPieceTokenizer> qformer;
  nlohmann::json reference;
};

const FixtureTokenizers& Fixture(const std::string& checkpoint) {
  static std::map<std::string, FixtureTokenizers> cache;
  auto& t = cache[checkpoint];
  if (!t.lm) {
    auto manifest = LoadPackageManifest(FixturePackageDir(checkpoint));
    if (!manifest.ok()) throw std::runtime_error(manifest.status().ToString());
    t.lm = std::move(*LmTokenizer::Load(manifest->lm_tokenizer));
    t.qformer =
        std::move(*WordPieceTokenizer::Load(manifest->qformer_tokenizer));
    t.reference = nlohmann::json::parse(testing::ReadFileOrDie(
        FixturesDir() + "/tokens/" + checkpoint + ".json"));
  }
  return t;
}

class FixtureTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTokenizerTest, EveryStringMatchesTheReference) {
  const FixtureTokenizers& t = Fixture(GetParam());
  ASSERT_GE(t.reference["cases"].size(), 15u);
  for (const auto& c : t.reference["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(text);
    EXPECT_EQ(t.lm->EncodePrompt(text),
              c["input_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(t.qformer->Encode(text),
              c["qformer_input_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(t.lm->Decode(c["input_ids"].get<std::vector<int32_t>>()),
              c["decoded_skip_special"].get<std::string>());
  }
}

TEST_P(FixtureTokenizerTest, LeftTruncationMatchesTheReference) {
  const FixtureTokenizers& t = Fixture(GetParam());
  for (const auto& c : t.reference["truncation"]) {
    const std::string text = c["text"];
    const int max_length = c["max_length"];
    EXPECT_EQ(t.lm->EncodePrompt(text, max_length),
              c["input_ids"].get<std::vector<int32_t>>())
        << text << " max_length " << max_length;
    EXPECT_EQ(t.qformer->Encode(text, max_length),
              c["qformer_input_ids"].get<std::vector<int32_t>>())
        << text << " max_length " << max_length;
  }
}

TEST_P(FixtureTokenizerTest, RandomIdsDecodeLikeTheReference) {
  const FixtureTokenizers& t = Fixture(GetParam());
  ASSERT_GE(t.reference["decodes"].size(), 20u);
  for (const auto& c : t.reference["decodes"]) {
    EXPECT_EQ(t.lm->Decode(c["ids"].get<std::vector<int32_t>>()),
              c["decoded_skip_special"].get<std::string>());
  }
}

// Streaming test inputs.

constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

// Whole, well-formed UTF-8 characters only.
bool IsWholeUtf8(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t length = c < 0x80             ? 1
                          : (c & 0xE0) == 0xC0 ? 2
                          : (c & 0xF0) == 0xE0 ? 3
                          : (c & 0xF8) == 0xF0 ? 4
                                               : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (size_t j = 1; j < length; ++j) {
      if ((static_cast<unsigned char>(text[i + j]) & 0xC0) != 0x80)
        return false;
    }
    i += length;
  }
  return true;
}

std::vector<int32_t> RandomIds(std::mt19937& rng,
                               const std::vector<int32_t>& alphabet,
                               size_t length) {
  std::vector<int32_t> ids(length);
  for (auto& id : ids) id = alphabet[rng() % alphabet.size()];
  return ids;
}

// Ids whose pieces make decoding hard: byte-fallback bytes, pieces of only
// space / punctuation / the letters of " n't 's 've 're 'm" (T5's clean-up
// rules), and specials (skipped by decode).
std::vector<int32_t> HardIds(const LmTokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string piece = tokenizer.TokenString(id);
    const std::string rest = absl::StrReplaceAll(piece, {{"\xE2\x96\x81", ""}});
    const bool bytes = absl::StartsWith(piece, "<0x");
    const bool rule_letters =
        rest.find_first_not_of(".?!,'ntmsvre") == std::string::npos;
    const bool special =
        absl::StartsWith(piece, "<") || absl::StartsWith(piece, "[");
    if (bytes || rule_letters || special) {
      ids.push_back(id);
    }
  }
  return ids;
}

// Fixed, random (whole vocabulary and hard ids) and long id sequences.
std::vector<std::vector<int32_t>> StreamingSequences(const FixtureTokenizers& t,
                                                     size_t random_length) {
  std::mt19937 rng(11);
  std::vector<int32_t> vocabulary(t.lm->vocab_size());
  std::iota(vocabulary.begin(), vocabulary.end(), 0);
  const std::vector<int32_t> hard = HardIds(*t.lm);
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& c : t.reference["decodes"])
    sequences.push_back(c["ids"].get<std::vector<int32_t>>());
  for (const auto& c : t.reference["cases"])
    sequences.push_back(c["input_ids"].get<std::vector<int32_t>>());
  for (int i = 0; i < 150; ++i) {
    sequences.push_back(RandomIds(rng, vocabulary, 1 + rng() % random_length));
    sequences.push_back(RandomIds(rng, hard, 1 + rng() % random_length));
  }
  return sequences;
}

// After every id, the final text so far plus the tail is exactly the decode
// of the ids so far; final text comes in whole characters.
TEST_P(FixtureTokenizerTest, IncrementalDecoderMatchesEveryPrefix) {
  const FixtureTokenizers& t = Fixture(GetParam());
  for (const auto& ids : StreamingSequences(t, 80)) {
    IncrementalDecoder decoder(*t.lm);
    std::string final_text;
    for (size_t n = 1; n <= ids.size(); ++n) {
      const std::string delta = decoder.Append(ids[n - 1]);
      ASSERT_TRUE(IsWholeUtf8(delta)) << delta;
      ASSERT_FALSE(absl::EndsWith(delta, kReplacementChar)) << delta;
      final_text += delta;
      ASSERT_EQ(final_text + decoder.tail(),
                t.lm->Decode(absl::MakeConstSpan(ids).first(n)))
          << ::testing::PrintToString(ids) << " after " << n << " ids";
    }
  }
}

// The work per id stays bounded: a long sequence's decoder re-decodes only a
// few recent ids.
TEST_P(FixtureTokenizerTest, IncrementalDecoderWindowStaysSmall) {
  const FixtureTokenizers& t = Fixture(GetParam());
  // Prose, specials left out.
  const std::vector<int32_t> specials = t.lm->EncodePrompt("");
  std::vector<int32_t> prose;
  while (prose.size() < 3000) {
    for (int32_t id : t.lm->EncodePrompt(
             "What is unusual about this image? There's a red circle, and "
             "it isn't left of the square: it's above it. ")) {
      if (std::find(specials.begin(), specials.end(), id) == specials.end())
        prose.push_back(id);
    }
  }
  std::mt19937 rng(3);
  std::vector<int32_t> vocabulary(t.lm->vocab_size());
  std::iota(vocabulary.begin(), vocabulary.end(), 0);
  for (const auto& ids : {prose, RandomIds(rng, vocabulary, 3000)}) {
    IncrementalDecoder decoder(*t.lm);
    std::string text;
    size_t widest = 0;
    for (int32_t id : ids) {
      text += decoder.Append(id);
      widest = std::max(widest, decoder.window_size());
    }
    EXPECT_EQ(text + decoder.tail(), t.lm->Decode(ids));
    // Prose: the last chunk and the new id. Random ids: also runs of
    // specials (no text) and of bytes completing no character (rarely > 8
    // in 3000).
    EXPECT_LE(widest, ids == prose ? 2u : 24u);
  }
}

// Streaming: the concatenated deltas equal decoding all ids at once, also
// for long sequences, and no delta ever holds a broken character.
TEST_P(FixtureTokenizerTest, StreamingDetokenizerMatchesFullDecode) {
  const FixtureTokenizers& t = Fixture(GetParam());
  std::vector<std::vector<int32_t>> sequences = StreamingSequences(t, 40);
  std::mt19937 rng(5);
  std::vector<int32_t> vocabulary(t.lm->vocab_size());
  std::iota(vocabulary.begin(), vocabulary.end(), 0);
  for (int i = 0; i < 3; ++i) {
    sequences.push_back(RandomIds(rng, vocabulary, 2000));
    sequences.push_back(RandomIds(rng, HardIds(*t.lm), 2000));
  }
  for (const auto& ids : sequences) {
    TextStreamer streamer(*t.lm, {});
    std::string streamed;
    for (int32_t id : ids) {
      const std::string delta = streamer.Append(id).text;
      EXPECT_TRUE(IsWholeUtf8(delta)) << delta;
      EXPECT_FALSE(absl::EndsWith(delta, kReplacementChar)) << delta;
      streamed += delta;
    }
    streamed += streamer.Finish();
    EXPECT_EQ(streamed, t.lm->Decode(ids)) << ::testing::PrintToString(ids);
    EXPECT_EQ(streamed, streamer.text());
  }
}

// Stop sequences: the streamer stops at the first id whose decode (of all
// ids so far) holds a stop, with exactly the text before its earliest
// occurrence; without one, everything comes out.
TEST_P(FixtureTokenizerTest, StreamerStopsAtTheFirstDecodeHoldingAStop) {
  const FixtureTokenizers& t = Fixture(GetParam());
  std::mt19937 rng(17);
  int stopped_count = 0;
  for (const auto& ids : StreamingSequences(t, 60)) {
    const std::string whole = t.lm->Decode(ids);
    // Two stops: pieces of the text (cut at character boundaries) or, for
    // some sequences, strings it does not hold.
    std::vector<std::string> stops;
    for (int i = 0; i < 2; ++i) {
      size_t begin = whole.empty() ? 0 : rng() % whole.size();
      size_t end = std::min(whole.size(), begin + 1 + rng() % 6);
      while (begin > 0 && (whole[begin] & 0xC0) == 0x80) --begin;
      while (end < whole.size() && (whole[end] & 0xC0) == 0x80) ++end;
      stops.push_back(rng() % 5 == 0 || begin == end
                          ? "\x01no such text"
                          : whole.substr(begin, end - begin));
    }
    // The reference: decode every prefix from scratch.
    std::string expected = whole;
    size_t expected_stop_id = ids.size();
    for (size_t n = 1; n <= ids.size() && expected_stop_id == ids.size(); ++n) {
      const std::string text = t.lm->Decode(absl::MakeConstSpan(ids).first(n));
      size_t at = std::string::npos;
      for (const std::string& stop : stops) at = std::min(at, text.find(stop));
      if (at != std::string::npos) {
        expected = text.substr(0, at);
        expected_stop_id = n - 1;
      }
    }

    TextStreamer streamer(*t.lm, stops);
    std::string streamed;
    size_t stop_id = ids.size();
    for (size_t i = 0; i < ids.size(); ++i) {
      const TextStreamer::Delta delta = streamer.Append(ids[i]);
      EXPECT_TRUE(IsWholeUtf8(delta.text)) << delta.text;
      streamed += delta.text;
      if (delta.stopped) {
        stop_id = i;
        break;
      }
    }
    streamed += streamer.Finish();
    SCOPED_TRACE(::testing::PrintToString(ids) + " stops " +
                 ::testing::PrintToString(stops));
    EXPECT_EQ(stop_id, expected_stop_id);
    EXPECT_EQ(streamed, expected);
    stopped_count += stop_id < ids.size();
  }
  EXPECT_GT(stopped_count, 100);  // the stops were really exercised
}

// T5's decode rewrites its end (clean-up, strip), yet streaming releases
// text word by word, not at the end, and it adds up to the decode.
TEST(T5StreamingTest, ReleasesTextBeforeTheEnd) {
  const FixtureTokenizers& t = Fixture("tiny-t5");
  const std::string text =
      "it 's a red circle , is n't it ? we 've seen it . they 're here !";
  std::vector<int32_t> ids = t.lm->EncodePrompt(text);
  ids.pop_back();  // the EOS
  TextStreamer streamer(*t.lm, {});
  std::string streamed;
  size_t released_before_half = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    streamed += streamer.Append(ids[i]).text;
    if (i + 1 == ids.size() / 2) released_before_half = streamed.size();
  }
  streamed += streamer.Finish();
  EXPECT_EQ(streamed, t.lm->Decode(ids));
  EXPECT_EQ(streamed,
            "it's a red circle, isn't it? we've seen it. they're here!");
  EXPECT_GT(released_before_half, 15u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureTokenizerTest,
                         ::testing::Values("tiny-llama", "tiny-t5"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// tokenizer.special_tokens_as_text: special-token strings are plain text
// (Hugging Face's split_special_tokens=True).
TEST(SpecialTokensAsTextTest, SpecialStringsBecomePlainText) {
  auto manifest = LoadPackageManifest(FixturePackageDir("tiny-llama"));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  const std::string text = "a</s>b [SEP] c";
  auto lm = LmTokenizer::Load(manifest->lm_tokenizer);
  auto qformer = WordPieceTokenizer::Load(manifest->qformer_tokenizer);
  manifest->lm_tokenizer.special_tokens_as_text = true;
  manifest->qformer_tokenizer.special_tokens_as_text = true;
  auto lm_text = LmTokenizer::Load(manifest->lm_tokenizer);
  auto qformer_text = WordPieceTokenizer::Load(manifest->qformer_tokenizer);
  ASSERT_TRUE(lm.ok() && qformer.ok() && lm_text.ok() && qformer_text.ok());

  const auto special = (*lm)->EncodePrompt(text);
  const auto plain = (*lm_text)->EncodePrompt(text);
  // By default </s> inside the text is the EOS id (after BOS = 2 too).
  EXPECT_EQ(std::count(special.begin(), special.end(), 2), 2);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 1);  // BOS only
  EXPECT_EQ((*lm_text)->Decode(plain), text);
  const auto q_special = (*qformer)->Encode(text);
  const auto q_plain = (*qformer_text)->Encode(text);
  EXPECT_EQ(std::count(q_special.begin(), q_special.end(), 102), 2);
  EXPECT_EQ(std::count(q_plain.begin(), q_plain.end(), 102), 1);  // the end
}

TEST(WordPieceTokenizerTest, BasicTokenizerFollowsBert) {
  const FixtureTokenizers& t = Fixture("tiny-llama");
  EXPECT_EQ(t.qformer->BasicTokenize("H\xC3\xA9llo, W\xC3\xB6RLD!"),
            (std::vector<std::string>{"hello", ",", "world", "!"}));
  EXPECT_EQ(
      t.qformer->BasicTokenize("\xE5\x9B\xBE\xE7\x89\x87"
                               "a\tb\x01"),  // CJK isolated, control dropped
      (std::vector<std::string>{"\xE5\x9B\xBE", "\xE7\x89\x87", "a", "b"}));
  EXPECT_EQ(t.qformer->Encode(std::string(150, 'x')),
            (std::vector<int32_t>{101, 100, 102}));
}

// [DEC] is added after vocab.txt (id = its size), as Hugging Face adds it;
// the vocabulary the model's embedding is sized for counts it (the
// wordpiece fuzzer found ids past vocab_size() before this).
TEST(WordPieceTokenizerTest, AddedTokensExtendTheVocabulary) {
  auto manifest = LoadPackageManifest(FixturePackageDir("tiny-llama"));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  auto qformer = WordPieceTokenizer::Load(manifest->qformer_tokenizer);
  ASSERT_TRUE(qformer.ok()) << qformer.status();
  const auto ids = (*qformer)->Encode("a [DEC] b");
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_LT(ids[2], (*qformer)->vocab_size());
  EXPECT_EQ((*qformer)->TokenString(ids[2]), "[DEC]");
  EXPECT_EQ((*qformer)->vocab_size(), manifest->qformer_vocab_size);

  manifest->qformer_tokenizer.special_tokens.push_back(
      {"[FAR]", (*qformer)->vocab_size() + 100, false, false});
  auto broken = WordPieceTokenizer::Load(manifest->qformer_tokenizer);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("qformer_tokenizer.special_tokens"),
            std::string::npos);
}

TEST(TokenizerRobustnessTest, RandomAndInvalidUtf8NeverCrash) {
  const FixtureTokenizers& llama = Fixture("tiny-llama");
  const FixtureTokenizers& t5 = Fixture("tiny-t5");
  std::mt19937 rng(5);
  for (int i = 0; i < 500; ++i) {
    std::string text(rng() % 64, '\0');
    for (char& c : text) c = static_cast<char>(rng());
    for (const FixtureTokenizers* t : {&llama, &t5}) {
      const auto ids = t->lm->EncodePrompt(text);
      EXPECT_FALSE(ids.empty());
      t->lm->Decode(ids);
      const auto qids = t->qformer->Encode(text);
      EXPECT_GE(qids.size(), 2u);
    }
  }
}

}  // namespace
}  // namespace iblip::model
