#include "server/pipeline/request_validator.h"

#include <gtest/gtest.h>

#include "config/config_loader.h"

namespace iblip::server {
namespace {

// The config's defaults (the only ones), then a few made small to test.
ServingLimits TestLimits() {
  auto config = config::WithDefaults(config::ServerConfig());
  EXPECT_TRUE(config.ok());
  ServingLimits limits = ServingLimitsFrom(config->limits(), {256, 32, 321});
  limits.max_image_bytes = 1000;
  limits.max_prompt_bytes = 100;
  limits.max_prompt_tokens = 50;
  limits.max_new_tokens = 200;
  limits.max_context_tokens = 256;
  limits.lm_vocab_size = 321;
  limits.default_max_new_tokens = 64;
  return limits;
}

v1::GenerateRequest ValidRequest() {
  v1::GenerateRequest request;
  request.add_images()->set_data("not decoded here");
  request.set_prompt("What is this?");
  return request;
}

// Expects INVALID_ARGUMENT whose message starts with `field`.
void ExpectInvalid(const v1::GenerateRequest& request,
                   const std::string& field) {
  auto result = ValidateGenerateRequest(request, TestLimits(), 1);
  ASSERT_FALSE(result.ok()) << "expected an error for " << field;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << result.status();
  EXPECT_EQ(result.status().message().rfind(field, 0), 0u) << result.status();
}

TEST(RequestValidatorTest, DefaultsFillUnsetParameters) {
  auto result = ValidateGenerateRequest(ValidRequest(), TestLimits(), 42);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->settings.max_new_tokens, 64);
  EXPECT_EQ(result->settings.sampling.temperature, 0.0f);
  EXPECT_EQ(result->settings.sampling.top_k, 50);
  EXPECT_EQ(result->settings.num_return_sequences, 1);
  EXPECT_EQ(result->settings.seed, 42u);
  EXPECT_EQ(result->priority, Priority::kNormal);
}

TEST(RequestValidatorTest, SetParametersOverrideDefaults) {
  auto request = ValidRequest();
  auto& p = *request.mutable_parameters();
  p.set_max_new_tokens(5);
  p.set_temperature(0.7f);
  p.set_top_k(0);
  p.set_seed(9);
  p.set_num_return_sequences(3);
  p.add_stop_sequences("\n");
  request.set_priority(v1::PRIORITY_HIGH);
  auto result = ValidateGenerateRequest(request, TestLimits(), 1);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->settings.max_new_tokens, 5);
  EXPECT_FLOAT_EQ(result->settings.sampling.temperature, 0.7f);
  EXPECT_EQ(result->settings.sampling.top_k, 0);
  EXPECT_EQ(result->settings.seed, 9u);
  EXPECT_EQ(result->settings.num_return_sequences, 3);
  EXPECT_EQ(result->settings.stop_sequences, std::vector<std::string>{"\n"});
  EXPECT_EQ(result->priority, Priority::kHigh);
}

TEST(RequestValidatorTest, EmptyPromptIsValid) {
  auto request = ValidRequest();
  request.clear_prompt();
  EXPECT_TRUE(ValidateGenerateRequest(request, TestLimits(), 1).ok());
}

TEST(RequestValidatorTest, ImageErrors) {
  auto request = ValidRequest();
  request.clear_images();
  ExpectInvalid(request, "images");
  request = ValidRequest();
  request.add_images()->set_data("x");
  ExpectInvalid(request, "images");
  request = ValidRequest();
  request.mutable_images(0)->clear_data();
  ExpectInvalid(request, "images[0].data");
  request = ValidRequest();
  request.mutable_images(0)->set_data(std::string(1001, 'x'));
  ExpectInvalid(request, "images[0].data");
}

TEST(RequestValidatorTest, ImageReferencesAreSha256Hex) {
  auto request = ValidRequest();
  request.mutable_images(0)->set_sha256(std::string(64, 'a'));
  EXPECT_TRUE(ValidateGenerateRequest(request, TestLimits(), 1).ok());
  // Not a SHA-256: too short, too long, uppercase, not hex, empty.
  for (const std::string& bad :
       {std::string(63, 'a'), std::string(65, 'a'), std::string(64, 'A'),
        std::string(63, 'a') + "g", std::string()}) {
    request.mutable_images(0)->set_sha256(bad);
    ExpectInvalid(request, "images[0].sha256");
  }
}

TEST(RequestValidatorTest, PromptErrors) {
  auto request = ValidRequest();
  request.set_prompt(std::string(101, 'a'));
  ExpectInvalid(request, "prompt");
  request.set_prompt("bad \xC3\x28 utf8");
  ExpectInvalid(request, "prompt");
}

TEST(RequestValidatorTest, ParameterRanges) {
  struct Case {
    const char* field;
    void (*mutate)(v1::GenerationParameters&);
  };
  const Case cases[] = {
      {"parameters.max_new_tokens", [](auto& p) { p.set_max_new_tokens(0); }},
      {"parameters.max_new_tokens", [](auto& p) { p.set_max_new_tokens(201); }},
      {"parameters.min_new_tokens",
       [](auto& p) {
         p.set_max_new_tokens(5);
         p.set_min_new_tokens(6);
       }},
      {"parameters.temperature", [](auto& p) { p.set_temperature(-1); }},
      {"parameters.temperature",
       [](auto& p) { p.set_temperature(std::nanf("")); }},
      {"parameters.top_k", [](auto& p) { p.set_top_k(322); }},
      {"parameters.top_p", [](auto& p) { p.set_top_p(0); }},
      {"parameters.top_p", [](auto& p) { p.set_top_p(1.5f); }},
      {"parameters.repetition_penalty",
       [](auto& p) { p.set_repetition_penalty(0); }},
      {"parameters.length_penalty", [](auto& p) { p.set_length_penalty(11); }},
      {"parameters.num_beams", [](auto& p) { p.set_num_beams(0); }},
      {"parameters.num_beams", [](auto& p) { p.set_num_beams(9); }},
      {"parameters.num_beams",
       [](auto& p) {
         p.set_num_beams(2);
         p.set_temperature(1);
       }},
      {"parameters.num_return_sequences",
       [](auto& p) { p.set_num_return_sequences(2); }},
      {"parameters.num_return_sequences",
       [](auto& p) {
         p.set_temperature(1);
         p.set_num_return_sequences(9);
       }},
      {"parameters.stop_sequences[0]",
       [](auto& p) { p.add_stop_sequences(""); }},
      {"parameters.stop_sequences[0]",
       [](auto& p) { p.add_stop_sequences(std::string(129, 'x')); }},
      {"parameters.stop_sequences[0]",
       [](auto& p) { p.add_stop_sequences("\xFF"); }},
      {"parameters.stop_sequences",
       [](auto& p) {
         for (int i = 0; i < 9; ++i) p.add_stop_sequences("x");
       }},
  };
  for (const Case& c : cases) {
    auto request = ValidRequest();
    c.mutate(*request.mutable_parameters());
    ExpectInvalid(request, c.field);
  }
}

// Each limit that ParameterRanges and the error tests cross, exactly at the
// limit: accepted (a validator off by one fails here, not there).
TEST(RequestValidatorTest, ValuesAtTheLimitsAreAccepted) {
  struct Case {
    const char* what;
    void (*mutate)(v1::GenerateRequest&);
  };
  const Case cases[] = {
      {"max_new_tokens = limit",
       [](auto& r) { r.mutable_parameters()->set_max_new_tokens(200); }},
      {"min_new_tokens = max_new_tokens",
       [](auto& r) {
         r.mutable_parameters()->set_max_new_tokens(5);
         r.mutable_parameters()->set_min_new_tokens(5);
       }},
      {"temperature 100",
       [](auto& r) { r.mutable_parameters()->set_temperature(100); }},
      {"top_k = vocabulary",
       [](auto& r) { r.mutable_parameters()->set_top_k(321); }},
      {"top_p 1", [](auto& r) { r.mutable_parameters()->set_top_p(1); }},
      {"repetition_penalty 10",
       [](auto& r) { r.mutable_parameters()->set_repetition_penalty(10); }},
      {"length_penalty -10",
       [](auto& r) { r.mutable_parameters()->set_length_penalty(-10); }},
      {"num_beams 8 returning 8",
       [](auto& r) {
         r.mutable_parameters()->set_num_beams(8);
         r.mutable_parameters()->set_num_return_sequences(8);
       }},
      {"8 sampled sequences",
       [](auto& r) {
         r.mutable_parameters()->set_temperature(1);
         r.mutable_parameters()->set_num_return_sequences(8);
       }},
      {"8 stop sequences of 128 bytes",
       [](auto& r) {
         for (int i = 0; i < 8; ++i)
           r.mutable_parameters()->add_stop_sequences(std::string(128, 'x'));
       }},
      {"image of 1000 bytes",
       [](auto& r) { r.mutable_images(0)->set_data(std::string(1000, 'x')); }},
      {"prompt of 100 bytes",
       [](auto& r) { r.set_prompt(std::string(100, 'a')); }},
      {"request_id of 128 printable characters",
       [](auto& r) { r.set_request_id(std::string(127, '!') + "~"); }},
      {"PRIORITY_LOW", [](auto& r) { r.set_priority(v1::PRIORITY_LOW); }},
  };
  for (const Case& c : cases) {
    auto request = ValidRequest();
    c.mutate(request);
    auto result = ValidateGenerateRequest(request, TestLimits(), 1);
    EXPECT_TRUE(result.ok()) << c.what << ": " << result.status();
  }
}

TEST(RequestValidatorTest, PriorityAndRequestId) {
  auto request = ValidRequest();
  request.set_priority(static_cast<v1::Priority>(17));
  ExpectInvalid(request, "priority");
  request = ValidRequest();
  request.set_request_id("has space");
  ExpectInvalid(request, "request_id");
  request.set_request_id(std::string(129, 'a'));
  ExpectInvalid(request, "request_id");
}

TEST(RequestValidatorTest, BeamSearchSettings) {
  auto request = ValidRequest();
  request.mutable_parameters()->set_num_beams(3);
  request.mutable_parameters()->set_num_return_sequences(2);
  request.mutable_parameters()->set_length_penalty(0.5f);
  auto result = ValidateGenerateRequest(request, TestLimits(), 1);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->settings.num_beams, 3);
  EXPECT_EQ(result->settings.num_return_sequences, 2);
  EXPECT_FLOAT_EQ(result->settings.length_penalty, 0.5f);
}

TEST(RequestValidatorTest, TokenBudget) {
  GenerationSettings settings;
  settings.max_new_tokens = 100;
  EXPECT_TRUE(ValidateTokenBudget(50, 8, settings, TestLimits()).ok());
  EXPECT_EQ(ValidateTokenBudget(51, 8, settings, TestLimits()).code(),
            absl::StatusCode::kInvalidArgument);
  settings.max_new_tokens = 198;  // 50 + 8 + 198 = the context of 256
  EXPECT_TRUE(ValidateTokenBudget(50, 8, settings, TestLimits()).ok());
  settings.max_new_tokens = 199;
  auto status = ValidateTokenBudget(50, 8, settings, TestLimits());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message().rfind("parameters.max_new_tokens", 0), 0u)
      << status;
}

TEST(Utf8Test, AcceptsValidAndRejectsMalformed) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
}

}  // namespace
}  // namespace iblip::server
