// The LM tokenizer (SentencePiece behind its dlopen'ed shim) and the Q-Former
// WordPiece tokenizer, against the Hugging Face processor's own outputs in
// ../shared/fixtures/tokens. This binary links gRPC, protobuf and torch: the
// shim keeps SentencePiece's bundled protobuf from clashing with them.
#include <gtest/gtest.h>

#include <random>

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

// Streaming: the concatenated deltas equal decoding all ids at once, and no
// delta ever holds a broken character.
TEST_P(FixtureTokenizerTest, StreamingDetokenizerMatchesFullDecode) {
  const FixtureTokenizers& t = Fixture(GetParam());
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& c : t.reference["decodes"])
    sequences.push_back(c["ids"].get<std::vector<int32_t>>());
  for (const auto& c : t.reference["cases"])
    sequences.push_back(c["input_ids"].get<std::vector<int32_t>>());
  for (int i = 0; i < 200; ++i) {  // random ids over the whole vocabulary
    std::vector<int32_t> ids(1 + rng() % 40);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % t.lm->vocab_size());
    sequences.push_back(ids);
  }
  for (const auto& ids : sequences) {
    TextStreamer streamer(*t.lm, {});
    std::string streamed;
    for (int32_t id : ids) {
      const std::string delta = streamer.Append(id).text;
      EXPECT_EQ(delta.find("\xEF\xBF\xBD",
                           delta.size() >= 3 ? delta.size() - 3 : 0) ==
                        std::string::npos ||
                    t.lm->Decode(ids).find("\xEF\xBF\xBD") != std::string::npos,
                true);
      streamed += delta;
    }
    streamed += streamer.Finish();
    EXPECT_EQ(streamed, t.lm->Decode(ids));
  }
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
