#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>

#include "iblip/v1/iblip.grpc.pb.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/wordpiece_tokenizer.h"
#include "server/engine.h"
#include "server/feature_cache.h"
#include "server/metrics.h"
#include "server/request_validator.h"
#include "server/worker_pool.h"

namespace iblip::server {

// The iblip.v1 service (gRPC callback API). Handlers only validate and hand
// work on: preprocessing goes to the worker pool, generation to the engine.
// They never block.
class InferenceService final : public v1::InstructBlipService::CallbackService {
 public:
  // Everything here is owned by the Server and outlives the service.
  struct Dependencies {
    const model::PackageManifest* manifest = nullptr;
    Engine* engine = nullptr;
    const model::LmTokenizer* lm_tokenizer = nullptr;
    const model::WordPieceTokenizer* qformer_tokenizer = nullptr;
    const model::ImagePreprocessor* image_preprocessor = nullptr;
    WorkerPool* preprocess_pool = nullptr;
    Metrics* metrics = nullptr;
    FeatureCache* feature_cache = nullptr;
    ServingLimits limits;
    v1::ModelInfo model_info;
  };

  explicit InferenceService(Dependencies deps) : deps_(std::move(deps)) {}

  // Until this is called with true (after warm-up), and again after it is
  // called with false (drain), Generate answers UNAVAILABLE.
  void SetAcceptingRequests(bool accepting) { accepting_.store(accepting); }

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
  // Validates, admits and schedules preprocessing; results and errors go to
  // `reactor` (a ResponseSink with Attach()).
  template <typename Reactor>
  void StartGeneration(grpc::CallbackServerContext* context,
                       const v1::GenerateRequest& request,
                       const std::string& request_id, Reactor* reactor);
  // Runs on the preprocessing pool: decode, tokenize, budget check, submit.
  void Preprocess(std::shared_ptr<GenerationRequest> request,
                  std::string image_bytes);
  std::string NewRequestId();

  Dependencies deps_;
  std::atomic<bool> accepting_{false};
  std::atomic<uint64_t> next_request_number_{1};
};

}  // namespace iblip::server
