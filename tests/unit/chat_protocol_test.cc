#include "server/http/chat_protocol.h"

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "nlohmann/json.hpp"

namespace iblip::server::http {
namespace {

using nlohmann::json;

// The server's mode, fixed: what a request without "history" gets anywhere.
const HistoryPolicy kLatestOnly{HistoryMode::kLatest, false};

std::string DataUrl(const std::string& bytes) {
  return "data:image/png;base64," + absl::Base64Escape(bytes);
}

json UserTurn(const std::string& text, const std::string& image = "") {
  json content = json::array();
  if (!image.empty())
    content.push_back({{"type", "image_url"}, {"image_url", {{"url", image}}}});
  content.push_back({{"type", "text"}, {"text", text}});
  return {{"role", "user"}, {"content", content}};
}

TEST(ChatProtocolTest, ParsesImageTextAndParameters) {
  json body = {{"model", "anything"},
               {"messages",
                {{{"role", "system"}, {"content", "be brief"}},
                 UserTurn("what is it?", DataUrl("PNGBYTES"))}},
               {"temperature", 0.5},
               {"top_p", 0.9},
               {"max_tokens", 12},
               {"min_tokens", 3},
               {"seed", 7},
               {"n", 2},
               {"stop", "END"},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  auto chat = ParseChatRequest(body.dump(), kLatestOnly);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->generate.images(0).data(), "PNGBYTES");
  EXPECT_EQ(chat->generate.prompt(), "what is it?");
  const auto& p = chat->generate.parameters();
  EXPECT_FLOAT_EQ(p.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(p.top_p(), 0.9f);
  EXPECT_EQ(p.max_new_tokens(), 12u);
  EXPECT_EQ(p.min_new_tokens(), 3u);
  EXPECT_EQ(p.seed(), 7u);
  EXPECT_EQ(p.num_return_sequences(), 2u);
  EXPECT_EQ(p.stop_sequences(0), "END");
  EXPECT_TRUE(chat->stream);
  EXPECT_TRUE(chat->include_usage);
  EXPECT_EQ(chat->n, 2);
}

TEST(ChatProtocolTest, MultiTurnKeepsTheFirstImageAndBuildsThePrompt) {
  json messages = {UserTurn("what color?", DataUrl("FIRST")),
                   {{"role", "assistant"}, {"content", "red"}},
                   {{"role", "user"}, {"content", "and the shape?"}}};
  json body = {{"messages", messages}};
  auto latest = ParseChatRequest(body.dump(), kLatestOnly);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->generate.images(0).data(), "FIRST");
  EXPECT_EQ(latest->generate.prompt(), "and the shape?");
  auto transcript =
      ParseChatRequest(body.dump(), {HistoryMode::kTranscript, false});
  ASSERT_TRUE(transcript.ok());
  EXPECT_EQ(transcript->generate.prompt(),
            "Question: what color? Answer: red Question: and the shape? "
            "Answer:");
}

json TwoTurns() {
  return {UserTurn("what is on the table?", DataUrl("IMG")),
          {{"role", "assistant"}, {"content", "a car"}},
          {{"role", "user"}, {"content", "what color is it?"}}};
}

constexpr char kTwoTurnTranscript[] =
    "Question: what is on the table? Answer: a car Question: what color is "
    "it? Answer:";

TEST(ChatProtocolTest, ARequestChoosesItsHistoryWhereTheServerAllows) {
  for (HistoryMode server_mode :
       {HistoryMode::kLatest, HistoryMode::kTranscript}) {
    const HistoryPolicy selectable{server_mode, true};
    auto latest = ParseChatRequest(
        json{{"messages", TwoTurns()}, {"history", "latest"}}.dump(),
        selectable);
    ASSERT_TRUE(latest.ok()) << latest.status();
    EXPECT_EQ(latest->generate.prompt(), "what color is it?");
    auto transcript = ParseChatRequest(
        json{{"messages", TwoTurns()}, {"history", "transcript"}}.dump(),
        selectable);
    ASSERT_TRUE(transcript.ok()) << transcript.status();
    EXPECT_EQ(transcript->generate.prompt(), kTwoTurnTranscript);
    // No field (or null): the server's mode.
    for (const json& body :
         {json{{"messages", TwoTurns()}},
          json{{"messages", TwoTurns()}, {"history", nullptr}}}) {
      auto unchosen = ParseChatRequest(body.dump(), selectable);
      ASSERT_TRUE(unchosen.ok()) << unchosen.status();
      EXPECT_EQ(unchosen->generate.prompt(), server_mode == HistoryMode::kLatest
                                                 ? "what color is it?"
                                                 : kTwoTurnTranscript);
    }
  }
}

void ExpectHistoryRefused(const json& value, const HistoryPolicy& policy,
                          const std::string& why) {
  auto chat = ParseChatRequest(
      json{{"messages", TwoTurns()}, {"history", value}}.dump(), policy);
  ASSERT_FALSE(chat.ok()) << value.dump();
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(chat.status().message().rfind("history: ", 0), 0u)
      << chat.status().message();
  EXPECT_NE(chat.status().message().find(why), std::string::npos)
      << chat.status().message();
  const json error = json::parse(ErrorJson(chat.status()));
  EXPECT_EQ(error["error"]["param"], "history");
}

TEST(ChatProtocolTest, AnUnknownHistoryValueIsRefusedNamingTheField) {
  for (const json& bad : {json("all"), json("Latest"), json(""), json(1),
                          json(true), json::array({"latest"})}) {
    ExpectHistoryRefused(bad, {HistoryMode::kLatest, true},
                         "must be \"latest\" (the last user message only) or "
                         "\"transcript\"");
  }
}

TEST(ChatProtocolTest, AFixedHistoryRefusesTheOtherModeAndSaysWhy) {
  ExpectHistoryRefused(
      "transcript", {HistoryMode::kLatest, false},
      "this server sends only the latest user message "
      "(http.history: latest, http.history_selectable: false)");
  ExpectHistoryRefused("latest", {HistoryMode::kTranscript, false},
                       "this server always sends every earlier turn "
                       "(http.history: transcript, http.history_selectable: "
                       "false)");
  // Asking for the server's own mode is no conflict.
  auto same = ParseChatRequest(
      json{{"messages", TwoTurns()}, {"history", "transcript"}}.dump(),
      {HistoryMode::kTranscript, false});
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->generate.prompt(), kTwoTurnTranscript);
}

TEST(ChatProtocolTest, HistoryModeNamesRoundTrip) {
  for (HistoryMode mode : {HistoryMode::kLatest, HistoryMode::kTranscript})
    EXPECT_EQ(HistoryModeFromName(HistoryModeName(mode)), mode);
  EXPECT_FALSE(HistoryModeFromName("LATEST").has_value());
}

TEST(ChatProtocolTest, AnImageReferenceBecomesImageSha256) {
  const std::string hash(64, 'c');
  json messages = {UserTurn("what color?", "iblip:sha256:" + hash),
                   {{"role", "assistant"}, {"content", "red"}},
                   {{"role", "user"}, {"content", "and the shape?"}}};
  auto chat =
      ParseChatRequest(json{{"messages", messages}}.dump(), kLatestOnly);
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_EQ(chat->generate.images_size(), 1);
  EXPECT_EQ(chat->generate.images(0).sha256(), hash);
  EXPECT_FALSE(chat->generate.images(0).has_data());
  // The pipeline's NOT_FOUND names the request's field and the hash.
  const absl::Status renamed = ToOpenAiFieldNames(absl::NotFoundError(
      "images[0].sha256: " + hash + " is not held by this server"));
  EXPECT_EQ(renamed.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(renamed.message(), "messages (image_url iblip:sha256): " + hash +
                                   " is not held by this server");
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
}

void ExpectInvalid(const json& body, const std::string& field) {
  auto chat = ParseChatRequest(body.dump(), kLatestOnly);
  ASSERT_FALSE(chat.ok()) << body.dump();
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(chat.status().message().rfind(field + ":", 0), 0u)
      << chat.status().message();
}

TEST(ChatProtocolTest, BadRequestsNameTheField) {
  const json ok_turn = UserTurn("hi", DataUrl("X"));
  EXPECT_FALSE(ParseChatRequest("not json", kLatestOnly).ok());
  ExpectInvalid(json::object(), "messages");
  ExpectInvalid({{"messages", {UserTurn("no image")}}}, "messages");
  ExpectInvalid({{"messages", {UserTurn("hi", "https://example.com/a.png")}}},
                "messages[0].content[0].image_url");
  ExpectInvalid({{"messages", {UserTurn("hi", "data:image/png,notbase64")}}},
                "messages[0].content[0].image_url");
  ExpectInvalid({{"messages", {UserTurn("hi", "data:image/png;base64,@@@")}}},
                "messages[0].content[0].image_url");
  for (const std::string& bad_reference :
       {std::string("iblip:sha256:"), "iblip:sha256:" + std::string(63, 'a'),
        "iblip:sha256:" + std::string(64, 'A'),
        "iblip:sha256:" + std::string(64, 'a') + "0",
        std::string("iblip:sha1:abc")}) {
    ExpectInvalid({{"messages", {UserTurn("hi", bad_reference)}}},
                  "messages[0].content[0].image_url");
  }
  ExpectInvalid({{"messages", {{{"role", "robot"}, {"content", "x"}}}}},
                "messages[0].role");
  ExpectInvalid({{"messages",
                  {{{"role", "user"},
                    {"content", {{{"type", "audio"}, {"audio", "x"}}}}}}}},
                "messages[0].content[0].type");
  ExpectInvalid(
      {{"messages", {ok_turn, {{"role", "assistant"}, {"content", "a"}}}}},
      "messages");
  ExpectInvalid({{"messages", {ok_turn}}, {"temperature", "hot"}},
                "temperature");
  ExpectInvalid({{"messages", {ok_turn}}, {"max_tokens", -3}}, "max_tokens");
  ExpectInvalid({{"messages", {ok_turn}}, {"stop", 5}}, "stop");
  ExpectInvalid({{"messages", {ok_turn}}, {"stream", "yes"}}, "stream");
}

TEST(ChatProtocolTest, ResponsesChunksAndErrorsHaveOpenAisShape) {
  UsageStats usage;
  usage.prompt_tokens = 5;
  usage.image_tokens = 32;
  usage.generated_tokens = 3;
  json completion = json::parse(CompletionJson(
      "chatcmpl-1", 100, "m", {{"red", FinishReason::kStop}}, usage));
  EXPECT_EQ(completion["object"], "chat.completion");
  EXPECT_EQ(completion["choices"][0]["message"]["content"], "red");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(completion["usage"]["total_tokens"], 40);

  usage.time_to_first_token = absl::Milliseconds(30);
  usage.total_time = absl::Milliseconds(50);
  json final_event =
      json::parse(UsageEvent("chatcmpl-1", 100, "m", usage).substr(6));
  EXPECT_EQ(final_event["usage"]["completion_tokens"], 3);
  // The server's timings: 2 tokens after the first in 20 ms.
  EXPECT_DOUBLE_EQ(final_event["timings"]["time_to_first_token_ms"], 30.0);
  EXPECT_DOUBLE_EQ(final_event["timings"]["decode_ms"], 20.0);
  EXPECT_DOUBLE_EQ(final_event["timings"]["decode_tokens_per_second"], 100.0);
  usage.generated_tokens = 1;  // no rate from one token
  EXPECT_TRUE(json::parse(UsageEvent("chatcmpl-1", 100, "m", usage)
                              .substr(6))["timings"]["decode_tokens_per_second"]
                  .is_null());

  v1::ModelInfo info;
  info.mutable_limits()->set_max_new_tokens(512);
  info.mutable_limits()->set_max_context_tokens(2048);
  info.mutable_default_parameters()->set_max_new_tokens(64);
  json models =
      json::parse(ModelsJson("m", 100, info, {HistoryMode::kTranscript, true}));
  EXPECT_EQ(models["data"][0]["id"], "m");
  EXPECT_EQ(models["data"][0]["iblip"]["max_new_tokens"], 512);
  EXPECT_EQ(models["data"][0]["iblip"]["default_max_new_tokens"], 64);
  EXPECT_EQ(models["data"][0]["iblip"]["max_context_tokens"], 2048);
  EXPECT_EQ(models["data"][0]["iblip"]["history"], "transcript");
  EXPECT_EQ(models["data"][0]["iblip"]["history_selectable"], true);

  const std::string event =
      ChunkEvent("chatcmpl-1", 100, "m", 0, true, "re", FinishReason::kNone);
  ASSERT_EQ(event.rfind("data: ", 0), 0u);
  ASSERT_EQ(event.substr(event.size() - 2), "\n\n");
  json chunk = json::parse(event.substr(6));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  json last = json::parse(
      ChunkEvent("chatcmpl-1", 100, "m", 0, false, "", FinishReason::kLength)
          .substr(6));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(last["choices"][0]["delta"].contains("role"));

  json error = json::parse(ErrorJson(ToOpenAiFieldNames(
      absl::InvalidArgumentError("parameters.top_p: must be in (0, 1]"))));
  EXPECT_EQ(error["error"]["param"], "top_p");
  EXPECT_EQ(error["error"]["type"], "invalid_request_error");
  EXPECT_EQ(error["error"]["message"], "top_p: must be in (0, 1]");
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  json busy = json::parse(ErrorJson(absl::ResourceExhaustedError("full")));
  EXPECT_EQ(busy["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(busy["error"]["param"].is_null());
}

}  // namespace
}  // namespace iblip::server::http
