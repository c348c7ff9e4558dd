#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "iblip/v1/iblip.pb.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/wordpiece_tokenizer.h"
#include "server/engine/engine.h"
#include "server/engine/feature_cache.h"
#include "server/metrics.h"
#include "server/pipeline/output_processor.h"
#include "server/pipeline/request_validator.h"
#include "server/pipeline/worker_pool.h"

namespace iblip::server {

// The request path every transport shares (gRPC, the OpenAI-style HTTP
// endpoint): validation, admission into the bounded queue, preprocessing on
// the worker pool (cache lookup, decode, tokenize, token budget), then the
// engine. Never blocks the calling thread. Thread-safe.
class GenerationPipeline {
 public:
  // Everything here is owned by the Server and outlives the pipeline.
  struct Dependencies {
    const model::PackageManifest* manifest = nullptr;
    Engine* engine = nullptr;
    const model::LmTokenizer* lm_tokenizer = nullptr;
    const model::WordPieceTokenizer* qformer_tokenizer = nullptr;
    const model::ImagePreprocessor* image_preprocessor = nullptr;
    WorkerPool* preprocess_pool = nullptr;
    WorkerPool* output_pool = nullptr;  // the request side's text output
    Metrics* metrics = nullptr;
    FeatureCache* feature_cache = nullptr;
    ServingLimits limits;
    v1::ModelInfo model_info;
  };

  explicit GenerationPipeline(Dependencies deps) : deps_(std::move(deps)) {}

  // Until this is called with true (after warm-up), and again after it is
  // called with false (drain), requests get UNAVAILABLE.
  void SetAccepting(bool accepting) { accepting_.store(accepting); }

  // Starts `request`. Results and errors (exactly one OnComplete) go to
  // `sink`. `on_created` receives the engine's request object before any
  // work can finish (so a transport can cancel it); it is not called when
  // the request is refused outright.
  void Start(
      const v1::GenerateRequest& request, const std::string& request_id,
      absl::Time deadline, std::shared_ptr<ResponseSink> sink,
      const std::function<void(const std::shared_ptr<GenerationRequest>&)>&
          on_created);

  // "req-XXXXXXXX-N": unique across replicas and restarts.
  std::string NewRequestId();

  const Dependencies& deps() const { return deps_; }

 private:
  // A request's image: its encoded bytes, or (bytes empty) the SHA-256 of
  // bytes sent before.
  struct ImageSource {
    std::string bytes;
    std::string sha256;
  };

  // On the preprocessing pool.
  void Preprocess(std::shared_ptr<GenerationRequest> request,
                  ImageSource image_source);

  const Dependencies deps_;
  std::atomic<bool> accepting_{false};
  std::atomic<uint64_t> next_request_number_{1};
};

}  // namespace iblip::server
