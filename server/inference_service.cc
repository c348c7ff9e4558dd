#include "server/inference_service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/generate_reactors.h"
#include "server/grpc_auth.h"
#include "server/status_util.h"

namespace iblip::server {
namespace {

absl::Time ToAbslTime(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max())
    return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

}  // namespace

template <typename Reactor>
void InferenceService::StartGeneration(grpc::CallbackServerContext* context,
                                       const v1::GenerateRequest& request,
                                       const std::string& request_id,
                                       Reactor* reactor) {
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    pipeline_.deps().metrics->RequestFinished(auth.code());
    return reactor->OnComplete(auth, UsageStats{});
  }
  auto sink = std::make_shared<DetachableSink>(reactor);
  pipeline_.Start(request, request_id, ToAbslTime(context->deadline()), sink,
                  [&](const std::shared_ptr<GenerationRequest>& generation) {
                    reactor->Attach(generation, sink);
                  });
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string id = request->request_id().empty() ? pipeline_.NewRequestId()
                                                 : request->request_id();
  auto* reactor = new StreamGenerateReactor(id);
  StartGeneration(context, *request, id, reactor);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GenerateUnary(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
    v1::GenerateUnaryResponse* response) {
  std::string id = request->request_id().empty() ? pipeline_.NewRequestId()
                                                 : request->request_id();
  auto* reactor = new UnaryGenerateReactor(id, response);
  StartGeneration(context, *request, id, reactor);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest*,
    v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  *response = pipeline_.deps().model_info;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(
    grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
    v1::TokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  if (request->text().size() > pipeline_.deps().limits.max_prompt_bytes) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
        "text: must be at most ", pipeline_.deps().limits.max_prompt_bytes,
        " bytes, got ", request->text().size()))));
    return reactor;
  }
  if (!IsValidUtf8(request->text())) {
    reactor->Finish(
        ToGrpcStatus(absl::InvalidArgumentError("text: is not valid UTF-8")));
    return reactor;
  }
  pipeline_.deps().preprocess_pool->Post([this, reactor, request, response] {
    for (int32_t id :
         pipeline_.deps().lm_tokenizer->EncodePrompt(request->text())) {
      response->add_input_ids(id);
      response->add_tokens(pipeline_.deps().lm_tokenizer->TokenString(id));
    }
    for (int32_t id :
         pipeline_.deps().qformer_tokenizer->Encode(request->text())) {
      response->add_qformer_input_ids(id);
      response->add_qformer_tokens(
          pipeline_.deps().qformer_tokenizer->TokenString(id));
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace iblip::server
