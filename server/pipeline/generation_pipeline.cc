#include "server/pipeline/generation_pipeline.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/runtime/prompt.h"

namespace iblip::server {
namespace {

// Random seeds stay below 2^53 so they survive JSON (a double) unchanged.
uint64_t RandomSeed() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng() >> 11;
}

}  // namespace

std::string GenerationPipeline::NewRequestId() {
  // A per-process random prefix keeps ids unique across replicas and restarts.
  static const uint32_t prefix = static_cast<uint32_t>(std::random_device{}());
  return absl::StrFormat("req-%08x-%d", prefix,
                         next_request_number_.fetch_add(1));
}

void GenerationPipeline::Start(
    const v1::GenerateRequest& request, const std::string& request_id,
    absl::Time deadline, std::shared_ptr<ResponseSink> sink,
    const std::function<void(const std::shared_ptr<GenerationRequest>&)>&
        on_created) {
  const absl::Time arrival = absl::Now();
  auto fail = [&](const absl::Status& status) {
    deps_.metrics->RequestFinished(status.code());
    sink->OnComplete(status, UsageStats{});
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
  // The server's own bound, so that a drain as long as it never cuts a
  // generation short.
  generation->deadline =
      deps_.limits.max_request_time > absl::ZeroDuration()
          ? std::min(deadline, arrival + deps_.limits.max_request_time)
          : deadline;
  generation->prompt = request.prompt();
  generation->sink = OutputProcessor::Create(
      generation, generation->settings, *deps_.lm_tokenizer, std::move(sink),
      *deps_.output_pool, *deps_.metrics);
  on_created(generation);
  ImageSource image;
  if (request.images(0).source_case() == v1::Image::kSha256) {
    image.sha256 = request.images(0).sha256();
  } else {
    image.bytes = request.images(0).data();
  }
  deps_.preprocess_pool->Post(
      [this, generation, image = std::move(image)]() mutable {
        Preprocess(std::move(generation), std::move(image));
      });
}

void GenerationPipeline::Preprocess(std::shared_ptr<GenerationRequest> request,
                                    ImageSource image_source) {
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
  // skip decoding (and the vision stage) for them. A reference by hash is
  // served from those encodings alone.
  FeatureCache& cache = *deps_.feature_cache;
  const bool by_reference = image_source.bytes.empty();
  request->image_hash = by_reference
                            ? image_source.sha256
                            : FeatureCache::ImageHash(image_source.bytes);
  if (auto image =
          cache.FindEmbedding(request->image_hash, request->qformer_ids)) {
    request->image = std::move(*image);
  } else if (auto vision = cache.FindVision(request->image_hash)) {
    request->vision = std::move(*vision);
  } else if (by_reference) {
    return reject(absl::NotFoundError(
        absl::StrCat("images[0].sha256: ", request->image_hash,
                     " is not held by this server; send the data")));
  } else {
    auto pixels =
        deps_.image_preprocessor->Process(image_source.bytes, "images[0].data");
    if (!pixels.ok()) return reject(pixels.status());
    request->pixels = std::move(*pixels);
  }
  absl::Status budget = ValidateTokenBudget(request->prompt_ids.size(),
                                            deps_.model_info.num_query_tokens(),
                                            request->settings, deps_.limits);
  if (!budget.ok()) return reject(budget);
  deps_.engine->Submit(std::move(request));
}

}  // namespace iblip::server
