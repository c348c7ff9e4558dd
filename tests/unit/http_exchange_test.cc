// The HTTP request path without sockets (ServeRawRequests: Beast's parser
// with our limits, admission, routing, handlers, responses), with the fake
// chat backend: crashes found in the field, limits, auth, protocol details.

#include <gtest/gtest.h>

#include <stdexcept>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "server/http/api_routes.h"
#include "server/http/chat_reply.h"
#include "server/http/exchange.h"
#include "server/http/http_errors.h"
#include "tests/unit/fake_chat_backend.h"
#include "tests/unit/http_test_util.h"

namespace iblip::server::http {
namespace {

using nlohmann::json;
using testing::ChatBody;
using testing::ParsedResponse;
using testing::ParseResponses;
using testing::Request;

constexpr char kKey[] = "test-key";

class HttpExchangeTest : public ::testing::Test {
 protected:
  HttpExchangeTest() {
    limits_.max_header_bytes = 2048;
    limits_.max_url_bytes = 512;
    limits_.max_body_bytes = 4096;
    api_.router.Get("/boom", [](HttpRequest&) -> Reply {
      throw std::runtime_error("handler bug");
    });
  }

  std::vector<ParsedResponse> Serve(const std::string& bytes,
                                    bool head = false) {
    return ParseResponses(ServeRawRequests(bytes, api_.router, limits_), head);
  }
  ParsedResponse ServeOne(const std::string& bytes, bool head = false) {
    auto responses = Serve(bytes, head);
    EXPECT_EQ(responses.size(), 1u) << bytes.substr(0, 200);
    return responses.empty() ? ParsedResponse() : responses[0];
  }
  ParsedResponse Chat(const std::string& body) {
    return ServeOne(
        Request("POST", "/v1/chat/completions", body,
                std::string("Authorization: Bearer ") + kKey + "\r\n"));
  }
  static json ErrorOf(const ParsedResponse& response) {
    json body = json::parse(response.body);
    return body["error"];
  }

  FakeApi api_{kKey, JsonLimits{/*max_depth=*/8, /*max_elements=*/64}};
  HttpLimits limits_;
};

// The three requests that ended the process before this layer existed.
TEST_F(HttpExchangeTest, InvalidUtf8InThePathIsA404WithValidJson) {
  ParsedResponse response = ServeOne("GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(response.status, 404);
  const json error = ErrorOf(response);
  EXPECT_EQ(error["message"], "path: no such endpoint: /\xEF\xBF\xBD");
}

TEST_F(HttpExchangeTest, NonBooleanIncludeUsageIsA400) {
  ParsedResponse response = Chat(
      ChatBody(R"(, "stream": true, "stream_options": {"include_usage": 1})"));
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(ErrorOf(response)["param"], "stream_options.include_usage");
}

TEST_F(HttpExchangeTest, DeeplyNestedValueIsA400WithoutADump) {
  limits_.max_body_bytes = 1 << 20;
  const std::string deep = std::string(60000, '[') + std::string(60000, ']');
  ParsedResponse response = Chat(ChatBody(", \"n\": " + deep));
  EXPECT_EQ(response.status, 400);
  const std::string message = ErrorOf(response)["message"];
  EXPECT_EQ(message,
            "body: JSON nested deeper than 8 levels (http.max_json_depth)");
}

TEST_F(HttpExchangeTest, ManyTinyValuesStopAtTheElementBound) {
  std::string values = "[";
  for (int i = 0; i < 200; ++i) values += "{},";
  values += "{}]";
  ParsedResponse response = Chat(ChatBody(", \"x\": " + values));
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(ErrorOf(response)["message"],
            "body: more than 64 JSON values (http.max_json_elements)");
}

TEST_F(HttpExchangeTest, ClientValuesInErrorsAreShortAndSafe) {
  const std::string role(3000, 'r');
  ParsedResponse response =
      Chat(R"({"messages": [{"role": ")" + role + "\"}]}");
  EXPECT_EQ(response.status, 400);
  const std::string message = ErrorOf(response)["message"];
  EXPECT_LT(message.size(), 300u);
  EXPECT_NE(message.find("..."), std::string::npos);
  // Invalid UTF-8 inside JSON is the parser's to refuse.
  response = Chat("{\"messages\": [{\"role\": \"\xff\"}]}");
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(ErrorOf(response)["message"],
            "body: not valid JSON (error at byte 25)");
}

TEST_F(HttpExchangeTest, ChatAnswersWholeAndStreamed) {
  ParsedResponse whole =
      Chat(ChatBody(R"(, "n": 2, "temperature": 0.7)", "hello there"));
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json answer = json::parse(whole.body);
  EXPECT_EQ(answer["choices"].size(), 2u);
  EXPECT_EQ(answer["choices"][1]["message"]["content"], "hello there");

  ParsedResponse streamed = Chat(ChatBody(
      R"(, "stream": true, "stream_options": {"include_usage": true})", "hi"));
  ASSERT_EQ(streamed.status, 200);
  EXPECT_EQ(streamed.Header("content-type"), "text/event-stream");
  EXPECT_EQ(streamed.Header("transfer-encoding"), "chunked");
  EXPECT_NE(streamed.body.find(R"("content":"hi")"), std::string::npos);
  EXPECT_NE(streamed.body.find(R"("usage":)"), std::string::npos);
  EXPECT_TRUE(absl::EndsWith(streamed.body, "data: [DONE]\n\n"));
}

TEST_F(HttpExchangeTest, BackendErrorsKeepOpenAiFieldNames) {
  ParsedResponse response = Chat(ChatBody(R"(, "top_p": 1.5)"));
  EXPECT_EQ(response.status, 400);
  EXPECT_EQ(ErrorOf(response)["param"], "top_p");
  // Before any token, a streamed request's error is a plain HTTP error.
  response = Chat(ChatBody(R"(, "stream": true, "top_p": 1.5)"));
  EXPECT_EQ(response.status, 400);
}

TEST_F(HttpExchangeTest, HeaderAndUrlLimits) {
  const std::string big_header = "X-Big: " + std::string(3000, 'a') + "\r\n";
  EXPECT_EQ(ServeOne(Request("GET", "/", "", big_header)).status, 431);
  EXPECT_EQ(ServeOne(Request("GET", "/" + std::string(600, 'u'))).status, 414);
  // A request line longer than the whole header limit is a long URL too.
  EXPECT_EQ(ServeOne(Request("GET", "/" + std::string(5000, 'u'))).status, 414);
}

// A body cut short of its Content-Length: the input's end ends the
// exchange with nothing to answer (a connection would wait for the rest,
// then time out); this spun forever once (the fuzzer's timeout).
TEST_F(HttpExchangeTest, ABodyShorterThanItsLengthEndsWithTheInput) {
  const std::string bytes =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
      "test-key\r\nContent-Length: 3000\r\n\r\n{\"model\": \"demo\"";
  EXPECT_EQ(ServeRawRequests(bytes, api_.router, limits_), "");
}

TEST_F(HttpExchangeTest, BodyLimitAnswersBeforeTheBodyArrives) {
  // Content-Length says too much: 413 from the header alone (no body sent).
  ParsedResponse response = ServeOne(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
      "test-key\r\nContent-Length: 100000\r\n\r\n");
  EXPECT_EQ(response.status, 413);
  EXPECT_EQ(response.Header("connection"), "close");
  // Chunked: 413 once the chunks pass the limit.
  std::string chunked =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
      "test-key\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 10; ++i)
    chunked += "3e8\r\n" + std::string(1000, ' ') + "\r\n";
  EXPECT_EQ(ServeOne(chunked).status, 413);
}

TEST_F(HttpExchangeTest, KeysAreCheckedBeforeTheBodyAndGuardEveryV1Path) {
  // No body follows the header: the 401 needs none.
  ParsedResponse response = ServeOne(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
      "4000\r\n\r\n");
  EXPECT_EQ(response.status, 401);
  EXPECT_EQ(response.Header("www-authenticate"), "Bearer");
  EXPECT_EQ(ServeOne(Request("GET", "/v1/models")).status, 401);
  EXPECT_EQ(ServeOne(Request("GET", "/v1/unknown")).status, 401);
  EXPECT_EQ(ServeOne(Request("GET", "/v1/models", "",
                             "Authorization: Bearer wrong\r\n"))
                .status,
            401);
  response = ServeOne(
      Request("GET", "/v1/models", "", "Authorization: Bearer test-key\r\n"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(json::parse(response.body)["data"][0]["id"], "test-model");
  // The page and the icon are open.
  EXPECT_EQ(ServeOne(Request("GET", "/")).status, 200);
}

TEST_F(HttpExchangeTest, HeadAnswersGetRoutesWithoutABody) {
  ParsedResponse get = ServeOne(Request("GET", "/favicon.ico"));
  ParsedResponse head = ServeOne(Request("HEAD", "/favicon.ico"), true);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(head.Header("content-length"), std::to_string(get.body.size()));
  EXPECT_EQ(get.Header("content-type"), "image/x-icon");
  EXPECT_EQ(get.body.substr(0, 4), std::string("\0\0\1\0", 4));
}

TEST_F(HttpExchangeTest, MethodNotAllowedNamesTheMethods) {
  ParsedResponse response = ServeOne(Request(
      "GET", "/v1/chat/completions", "", "Authorization: Bearer test-key\r\n"));
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(response.Header("allow"), "POST, OPTIONS");
}

TEST_F(HttpExchangeTest, CorsForConfiguredOriginsOnly) {
  const std::string preflight =
      "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: "
      "https://ok.example\r\nAccess-Control-Request-Method: POST\r\n"
      "Access-Control-Request-Headers: authorization, content-type\r\n\r\n";
  ParsedResponse response = ServeOne(preflight);  // no key needed
  EXPECT_EQ(response.status, 204);
  EXPECT_EQ(response.Header("access-control-allow-origin"),
            "https://ok.example");
  EXPECT_EQ(response.Header("access-control-allow-methods"), "POST, OPTIONS");
  EXPECT_NE(
      response.Header("access-control-allow-headers").find("authorization"),
      std::string::npos);
  response =
      ServeOne(Request("GET", "/", "", "Origin: https://ok.example\r\n"));
  EXPECT_EQ(response.Header("access-control-allow-origin"),
            "https://ok.example");
  EXPECT_EQ(response.Header("vary"), "Origin");
  response =
      ServeOne(Request("GET", "/", "", "Origin: https://evil.example\r\n"));
  EXPECT_EQ(response.Header("access-control-allow-origin"), "");
}

TEST_F(HttpExchangeTest, ExpectContinue) {
  const std::string body = ChatBody();
  auto responses = Serve(Request("POST", "/v1/chat/completions", body,
                                 "Authorization: Bearer test-key\r\n"
                                 "Expect: 100-continue\r\n"));
  ASSERT_EQ(responses.size(), 2u);
  EXPECT_EQ(responses[0].status, 100);
  EXPECT_EQ(responses[1].status, 200);
  // Refused at the header: the final answer instead of 100 Continue.
  responses = Serve(Request("POST", "/v1/chat/completions", body,
                            "Expect: 100-continue\r\n"));
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].status, 401);
  EXPECT_EQ(ServeOne(Request("GET", "/", "", "Expect: magic\r\n")).status, 417);
}

TEST_F(HttpExchangeTest, AThrowingHandlerIsA500AndTheConnectionServesOn) {
  auto responses =
      Serve(Request("GET", "/boom") + Request("GET", "/favicon.ico"));
  ASSERT_EQ(responses.size(), 2u);
  EXPECT_EQ(responses[0].status, 500);
  EXPECT_EQ(ErrorOf(responses[0])["type"], "server_error");
  EXPECT_EQ(responses[1].status, 200);
}

TEST_F(HttpExchangeTest, MalformedRequestsAre400AndCloseTheConnection) {
  for (const std::string bytes :
       {"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "\r\n\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n", "GET\x01 / HTTP/1.1\r\n\r\n"}) {
    ParsedResponse response = ServeOne(bytes + Request("GET", "/"));
    EXPECT_EQ(response.status, 400) << bytes;
    EXPECT_EQ(response.Header("connection"), "close");
  }
}

TEST(HttpErrorsTest, ErrorJsonNeverThrowsAndClientTextIsBounded) {
  const json error = json::parse(
      ErrorJson(absl::InvalidArgumentError("x: bad \xff\xfe value")))["error"];
  EXPECT_EQ(error["message"], "x: bad \xEF\xBF\xBD\xEF\xBF\xBD value");
  EXPECT_EQ(error["param"], "x");
  const std::string euro = "\xE2\x82\xAC";  // 3 bytes
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += euro;
  const std::string cut = ClientText(long_text);
  EXPECT_EQ(cut.size(), 198u + 3u);  // whole characters, then "..."
  EXPECT_TRUE(absl::EndsWith(cut, "..."));
}

TEST(BoundedJsonTest, BoundsAndErrors) {
  EXPECT_TRUE(
      ParseBoundedJson(R"({"a": [1, 2, {"b": null}]})", {4, 6}, "body").ok());
  EXPECT_FALSE(
      ParseBoundedJson(R"({"a": [1, 2, {"b": null}]})", {2, 6}, "body").ok());
  EXPECT_FALSE(
      ParseBoundedJson(R"({"a": [1, 2, {"b": null}]})", {4, 5}, "body").ok());
  auto bad = ParseBoundedJson("{\"a\": \xff}", {}, "body");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "body: not valid JSON (error at byte 7)");
  EXPECT_EQ(DescribeJson(json::array({1, 2})), "an array of 2 values");
  EXPECT_EQ(DescribeJson(json(std::string(1000, 'z'))).size(), 205u);
}

// Cancelling a streamed reply mid-way (the drain timeout, a client gone):
// an error event and [DONE], and the backend's canceller runs.
TEST(ChatReplyTest, CancelEndsAStreamWithAnErrorEventAndDone) {
  ChatReply::Info info;
  info.id = "chatcmpl-1";
  info.stream = true;
  ChatReply reply(info);
  int cancels = 0;
  reply.SetCanceller([&] { ++cancels; });
  EXPECT_EQ(reply.Next().kind, ReplyPart::Kind::kNotYet);
  SequenceDelta delta;
  delta.text = "partial";
  reply.OnDelta(delta);
  EXPECT_EQ(reply.Next().kind, ReplyPart::Kind::kStreamStart);
  EXPECT_EQ(reply.Next().kind, ReplyPart::Kind::kStreamData);
  reply.Cancel(absl::UnavailableError("the server is shutting down"));
  EXPECT_EQ(cancels, 1);
  ReplyPart last = reply.Next();
  EXPECT_EQ(last.kind, ReplyPart::Kind::kStreamEnd);
  EXPECT_NE(last.data.find(R"("code":"unavailable")"), std::string::npos);
  EXPECT_TRUE(absl::EndsWith(last.data, "data: [DONE]\n\n"));
  reply.OnComplete(absl::CancelledError("late"), UsageStats{});  // ignored
  EXPECT_EQ(reply.Next().kind, ReplyPart::Kind::kNotYet);
}

TEST(ChatReplyTest, CancelBeforeTheCancellerIsSetStillCancels) {
  ChatReply reply(ChatReply::Info{});
  reply.Cancel(absl::CancelledError("the client disconnected"));
  int cancels = 0;
  reply.SetCanceller([&] { ++cancels; });
  EXPECT_EQ(cancels, 1);
  ReplyPart part = reply.Next();
  EXPECT_EQ(part.kind, ReplyPart::Kind::kResponse);
  EXPECT_EQ(part.response.status, 499);
}

}  // namespace
}  // namespace iblip::server::http
