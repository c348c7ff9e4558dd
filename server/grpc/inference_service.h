#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "iblip/v1/iblip.grpc.pb.h"
#include "server/api_key_auth.h"
#include "server/pipeline/generation_pipeline.h"

namespace iblip::server {

// The iblip.v1 service (gRPC callback API). Handlers only hand work on to
// the GenerationPipeline (shared with the HTTP endpoint); they never block.
// Generate, GenerateUnary and Tokenize are raw methods: the service parses
// requests itself so a malformed one gets an error naming the field
// (wire_request.h), where gRPC would answer a bare UNIMPLEMENTED.
using InstructBlipServiceBase =
    v1::InstructBlipService::WithRawCallbackMethod_Generate<
        v1::InstructBlipService::WithRawCallbackMethod_GenerateUnary<
            v1::InstructBlipService::WithRawCallbackMethod_Tokenize<
                v1::InstructBlipService::CallbackService>>>;

class InferenceService final : public InstructBlipServiceBase {
 public:
  // `pipeline` and `auth` (null: no API keys) are owned by the Server and
  // outlive the service.
  InferenceService(GenerationPipeline& pipeline, const ApiKeyAuth* auth)
      : pipeline_(pipeline), auth_(auth) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* GenerateUnary(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

 private:
  // Parses `wire` and starts the request through the pipeline; results and
  // errors go to a new Reactor (a ResponseSink with Attach()), returned.
  template <typename Reactor, typename... ReactorArgs>
  Reactor* StartGeneration(grpc::CallbackServerContext* context,
                           const grpc::ByteBuffer& wire,
                           ReactorArgs... reactor_args);

  GenerationPipeline& pipeline_;
  const ApiKeyAuth* const auth_;
};

}  // namespace iblip::server
