#include "client/generation_result.h"

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace iblip::client {
namespace {

TEST(GenerationResultTest, StreamBecomesTheContractJson) {
  GenerationResult result;
  v1::GenerateResponse first;
  first.set_request_id("r1");
  first.set_text("Hel");
  first.add_token_ids(5);
  result.Add(first);
  v1::GenerateResponse second = first;
  second.set_text("lo");
  second.clear_token_ids();
  second.add_token_ids(6);
  second.add_token_ids(2);
  second.set_finish_reason(v1::FINISH_REASON_STOP);
  result.Add(second);
  v1::GenerateResponse last;
  last.set_request_id("r1");
  last.mutable_usage()->set_generated_tokens(3);
  last.mutable_usage()->set_prompt_tokens(4);
  result.Add(last);

  const std::string line = result.ToJson();
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto json = nlohmann::json::parse(line);
  EXPECT_EQ(json["text"], "Hello");
  EXPECT_EQ(json["token_ids"], nlohmann::json({5, 6, 2}));
  EXPECT_EQ(json["finish_reason"], "stop");
  EXPECT_EQ(json["usage"]["generated_tokens"], 3);
  EXPECT_EQ(json["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(json["request_id"], "r1");
  EXPECT_FALSE(json.contains("sequences"));
}

TEST(GenerationResultTest, SeveralSequencesAreListed) {
  v1::GenerateUnaryResponse response;
  response.add_sequences()->set_text("a");
  response.add_sequences()->set_text("b");
  response.mutable_sequences(1)->set_finish_reason(v1::FINISH_REASON_LENGTH);
  auto json =
      nlohmann::json::parse(GenerationResult::FromUnary(response).ToJson());
  EXPECT_EQ(json["text"], "a");
  ASSERT_EQ(json["sequences"].size(), 2u);
  EXPECT_EQ(json["sequences"][1]["finish_reason"], "length");
}

}  // namespace
}  // namespace iblip::client
