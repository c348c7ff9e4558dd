#include "server/inference_service.h"

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "model/runtime/prompt.h"
#include "server/generate_reactors.h"
#include "server/status_util.h"

namespace iblip::server {
namespace {

absl::Time ToAbslTime(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max())
    return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

// Random seeds stay below 2^53 so they survive JSON (a double) unchanged.
uint64_t RandomSeed() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng() >> 11;
}

}  // namespace

std::string InferenceService::NewRequestId() {
  // A per-process random prefix keeps ids unique across replicas and restarts.
  static const uint32_t prefix = static_cast<uint32_t>(std::random_device{}());
  return absl::StrFormat("req-%08x-%d", prefix,
                         next_request_number_.fetch_add(1));
}

template <typename Reactor>
void InferenceService::StartGeneration(grpc::CallbackServerContext* context,
                                       const v1::GenerateRequest& request,
                                       const std::string& request_id,
                                       Reactor* reactor) {
  const absl::Time arrival = absl::Now();
  auto fail = [&](const absl::Status& status) {
    deps_.metrics->RequestFinished(status.code());
    reactor->OnComplete(status, UsageStats{});
  };
  if (!accepting_.load()) {
    return fail(
        absl::UnavailableError("server is not ready or is shutting down"));
  }
  auto validated = ValidateGenerateRequest(request, deps_.limits, RandomSeed());
  if (!validated.ok()) return fail(validated.status());
  if (absl::Status admitted = deps_.engine->Admit(); !admitted.ok())
    return fail(admitted);

  auto generation = std::make_shared<GenerationRequest>();
  generation->request_id = request_id;
  generation->priority = validated->priority;
  generation->settings = std::move(validated->settings);
  generation->arrival = arrival;
  generation->deadline = ToAbslTime(context->deadline());
  generation->prompt = request.prompt();
  auto sink = std::make_shared<DetachableSink>(reactor);
  generation->sink = sink;
  reactor->Attach(generation, sink);
  deps_.preprocess_pool->Post(
      [this, generation, image = request.images(0).data()]() mutable {
        Preprocess(std::move(generation), std::move(image));
      });
}

void InferenceService::Preprocess(std::shared_ptr<GenerationRequest> request,
                                  std::string image_bytes) {
  auto reject = [&](const absl::Status& status) {
    deps_.engine->CancelAdmission();
    deps_.metrics->RequestFinished(status.code());
    request->sink->OnComplete(status, UsageStats{});
  };
  if (request->cancelled.load())
    return reject(absl::CancelledError("cancelled by the client"));
  model::PromptInputs inputs =
      model::AssemblePrompt(*deps_.manifest, *deps_.lm_tokenizer,
                            *deps_.qformer_tokenizer, request->prompt);
  request->prompt_ids = std::move(inputs.prompt_ids);
  request->qformer_ids = std::move(inputs.qformer_input_ids);
  // Bytes seen before decoded fine then, and their encodings are cached:
  // skip decoding (and the vision stage) for them.
  FeatureCache& cache = *deps_.feature_cache;
  request->image_hash = FeatureCache::ImageHash(image_bytes);
  if (auto image =
          cache.FindEmbedding(request->image_hash, request->qformer_ids)) {
    request->image = std::move(*image);
  } else if (auto vision = cache.FindVision(request->image_hash)) {
    request->vision = std::move(*vision);
  } else {
    auto pixels =
        deps_.image_preprocessor->Process(image_bytes, "images[0].data");
    if (!pixels.ok()) return reject(pixels.status());
    request->pixels = std::move(*pixels);
  }
  absl::Status budget = ValidateTokenBudget(request->prompt_ids.size(),
                                            deps_.model_info.num_query_tokens(),
                                            request->settings, deps_.limits);
  if (!budget.ok()) return reject(budget);
  deps_.engine->Submit(std::move(request));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string id =
      request->request_id().empty() ? NewRequestId() : request->request_id();
  auto* reactor = new StreamGenerateReactor(id);
  StartGeneration(context, *request, id, reactor);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GenerateUnary(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
    v1::GenerateUnaryResponse* response) {
  std::string id =
      request->request_id().empty() ? NewRequestId() : request->request_id();
  auto* reactor = new UnaryGenerateReactor(id, response);
  StartGeneration(context, *request, id, reactor);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest*,
    v1::ModelInfo* response) {
  *response = deps_.model_info;
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(
    grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
    v1::TokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (request->text().size() > deps_.limits.max_prompt_bytes) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("text: must be at most ", deps_.limits.max_prompt_bytes,
                     " bytes, got ", request->text().size()))));
    return reactor;
  }
  if (!IsValidUtf8(request->text())) {
    reactor->Finish(
        ToGrpcStatus(absl::InvalidArgumentError("text: is not valid UTF-8")));
    return reactor;
  }
  deps_.preprocess_pool->Post([this, reactor, request, response] {
    for (int32_t id : deps_.lm_tokenizer->EncodePrompt(request->text())) {
      response->add_input_ids(id);
      response->add_tokens(deps_.lm_tokenizer->TokenString(id));
    }
    for (int32_t id : deps_.qformer_tokenizer->Encode(request->text())) {
      response->add_qformer_input_ids(id);
      response->add_qformer_tokens(deps_.qformer_tokenizer->TokenString(id));
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace iblip::server
