#pragma once

#include <functional>
#include <memory>
#include <string>

#include "iblip/v1/iblip.pb.h"
#include "server/api_key_auth.h"
#include "server/engine/generation_request.h"
#include "server/http/bounded_json.h"
#include "server/http/chat_protocol.h"
#include "server/http/router.h"

namespace iblip::server::http {

// Where chat requests go: the GenerationPipeline in the server
// (PipelineChatBackend), a fake in the fuzz target and the unit tests.
class ChatBackend {
 public:
  virtual ~ChatBackend() = default;
  virtual std::string NewRequestId() = 0;
  // Starts generating `request`. Its results go to `sink`: exactly one
  // OnComplete, possibly before Start returns. Returns what stops the
  // generation (within one decode step); it may outlive the generation.
  virtual std::function<void()> Start(const v1::GenerateRequest& request,
                                      const std::string& request_id,
                                      std::shared_ptr<ResponseSink> sink) = 0;
};

struct ApiOptions {
  std::string model_id;
  v1::ModelInfo model_info;  // limits and defaults, for GET /v1/models
  HistoryPolicy history;
  JsonLimits json;
  ChatBackend* backend = nullptr;    // outlives the router
  const ApiKeyAuth* auth = nullptr;  // null: no keys
};

// The OpenAI-compatible API and the web page: POST /v1/chat/completions,
// GET /v1/models (every /v1/ path needs a key when `auth` is set), GET /
// (the chat page) and GET /favicon.ico.
void AddApiRoutes(Router& router, const ApiOptions& options);

}  // namespace iblip::server::http
