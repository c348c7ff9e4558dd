#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "iblip/v1/iblip.grpc.pb.h"
#include "server/api_key_auth.h"
#include "server/generation_pipeline.h"

namespace iblip::server {

// The iblip.v1 service (gRPC callback API). Handlers only hand work on to
// the GenerationPipeline (shared with the HTTP endpoint); they never block.
class InferenceService final : public v1::InstructBlipService::CallbackService {
 public:
  // `pipeline` and `auth` (null: no API keys) are owned by the Server and
  // outlive the service.
  InferenceService(GenerationPipeline& pipeline, const ApiKeyAuth* auth)
      : pipeline_(pipeline), auth_(auth) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GenerateUnary(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
      v1::GenerateUnaryResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;

 private:
  // Starts the request through the pipeline; results and errors go to
  // `reactor` (a ResponseSink with Attach()).
  template <typename Reactor>
  void StartGeneration(grpc::CallbackServerContext* context,
                       const v1::GenerateRequest& request,
                       const std::string& request_id, Reactor* reactor);

  GenerationPipeline& pipeline_;
  const ApiKeyAuth* const auth_;
};

}  // namespace iblip::server
