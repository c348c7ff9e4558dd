#pragma once

// A ChatBackend without an engine, for the HTTP unit tests and the fuzz
// target: requests are validated as the server validates them, and the
// answer (the prompt's first bytes, in pieces, once per choice) arrives at
// once, before Start returns.

#include <atomic>
#include <string>

#include "config/config_loader.h"
#include "server/http/api_routes.h"
#include "server/pipeline/request_validator.h"

namespace iblip::server::http {

class FakeChatBackend final : public ChatBackend {
 public:
  std::string NewRequestId() override {
    return "fake-" + std::to_string(++requests_);
  }

  std::function<void()> Start(const v1::GenerateRequest& request,
                              const std::string&,
                              std::shared_ptr<ResponseSink> sink) override {
    auto config = config::WithDefaults(config::ServerConfig());
    ServingLimits limits =
        ServingLimitsFrom(config->limits(), {512, 32, 1000});
    limits.max_prompt_tokens = 400;
    limits.max_new_tokens = 100;
    auto validated = ValidateGenerateRequest(request, limits, /*seed=*/1);
    if (!validated.ok()) {
      sink->OnComplete(validated.status(), UsageStats{});
      return [] {};
    }
    const std::string text = request.prompt().substr(0, 24);
    UsageStats usage;
    usage.prompt_tokens = static_cast<int>(text.size());
    for (int i = 0; i < validated->settings.num_return_sequences; ++i) {
      for (size_t at = 0; at < text.size() || at == 0; at += 8) {
        SequenceDelta delta;
        delta.index = i;
        delta.text = text.substr(at, 8);
        if (at + 8 >= text.size()) delta.finish_reason = FinishReason::kLength;
        sink->OnDelta(std::move(delta));
        ++usage.generated_tokens;
      }
    }
    sink->OnComplete(absl::OkStatus(), usage);
    return [this] { ++cancels_; };
  }

  int cancels() const { return cancels_.load(); }

 private:
  std::atomic<int> requests_{0};
  std::atomic<int> cancels_{0};
};

// The server's API routes (AddApiRoutes) over a FakeChatBackend, with one
// API key and one allowed CORS origin (https://ok.example).
struct FakeApi {
  FakeApi(const std::string& key, JsonLimits json)
      : auth(ApiKeyAuth::FromKeys({key})) {
    ApiOptions api;
    api.model_id = "test-model";
    api.backend = &backend;
    api.auth = auth.get();
    api.json = json;
    AddApiRoutes(router, api);
    router.AllowOrigins({"https://ok.example"});
  }
  FakeChatBackend backend;
  std::unique_ptr<ApiKeyAuth> auth;
  Router router;
};

}  // namespace iblip::server::http
