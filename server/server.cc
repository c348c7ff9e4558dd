#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/cpu_limit.h"
#include "common/status_macros.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/instructblip_model.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/wordpiece_tokenizer.h"
#include "server/api_key_auth.h"
#include "server/engine/engine.h"
#include "server/engine/torch_model_runner.h"
#include "server/engine_options.h"
#include "server/grpc/health_service.h"
#include "server/grpc/inference_service.h"
#include "server/grpc/reflection_auth.h"
#include "server/http/http_frontend.h"
#include "server/metrics.h"
#include "server/pipeline/worker_pool.h"
#include "spdlog/spdlog.h"

#ifndef IBLIP_VERSION
#define IBLIP_VERSION "dev"
#endif

namespace iblip::server {
namespace {

constexpr char kServiceName[] = "iblip.v1.InstructBlipService";
constexpr int kWarmupTokens = 2;
constexpr absl::Duration kWarmupTimeout = absl::Minutes(10);

ServingLimits ResolveLimits(const config::LimitsConfig& c,
                            const model::PackageManifest& m) {
  return ServingLimitsFrom(
      c, ModelBounds{static_cast<uint32_t>(m.max_context_tokens),
                     static_cast<uint32_t>(m.num_query_tokens),
                     static_cast<uint32_t>(m.lm_vocab_size)});
}

v1::ModelInfo BuildModelInfo(const model::PackageManifest& m,
                             const ServingLimits& limits,
                             const std::string& device) {
  v1::ModelInfo info;
  info.set_model_id(m.model_id);
  info.set_lm_family(m.lm_family == model::LmFamily::kLlama
                         ? v1::LANGUAGE_MODEL_FAMILY_LLAMA
                         : v1::LANGUAGE_MODEL_FAMILY_T5);
  info.set_lm_vocab_size(m.lm_vocab_size);
  info.set_qformer_vocab_size(m.qformer_vocab_size);
  info.set_num_query_tokens(m.num_query_tokens);
  info.set_image_size(m.image.size);
  info.mutable_eos_token_ids()->Add(m.eos_token_ids.begin(),
                                    m.eos_token_ids.end());
  info.set_dtype(m.dtype);
  info.set_device(device);
  info.set_server_version(IBLIP_VERSION);
  v1::Limits& l = *info.mutable_limits();
  l.set_max_images_per_request(limits.max_images_per_request);
  l.set_max_image_bytes(limits.max_image_bytes);
  l.set_max_image_pixels(limits.max_image_pixels);
  l.set_max_prompt_bytes(limits.max_prompt_bytes);
  l.set_max_prompt_tokens(limits.max_prompt_tokens);
  l.set_max_new_tokens(limits.max_new_tokens);
  l.set_max_context_tokens(limits.max_context_tokens);
  l.set_max_num_beams(limits.max_num_beams);
  l.set_max_return_sequences(limits.max_return_sequences);
  l.set_max_stop_sequences(limits.max_stop_sequences);
  l.set_max_stop_sequence_bytes(limits.max_stop_sequence_bytes);
  l.set_max_request_bytes(limits.max_request_bytes);
  *info.mutable_default_parameters() = DefaultParameters(limits);
  return info;
}

// Waits for one engine request (the warm-up) to finish.
class WarmupSink final : public TokenSink {
 public:
  void OnTokens(TokenDelta) override {}
  void OnComplete(const absl::Status& status, const UsageStats&) override {
    done_.set_value(status);
  }
  std::future<absl::Status> result() { return done_.get_future(); }

 private:
  std::promise<absl::Status> done_;
};

}  // namespace

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view option) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(option, ": cannot read '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Plaintext, TLS (cert_file + key_file), or mutual TLS (+ client_ca_file).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const config::TlsConfig& tls) {
  if (tls.cert_file().empty() && tls.key_file().empty()) {
    if (!tls.client_ca_file().empty()) {
      return absl::InvalidArgumentError(
          "tls.client_ca_file: mutual TLS needs tls.cert_file and "
          "tls.key_file too");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_file().empty() || tls.key_file().empty()) {
    return absl::InvalidArgumentError(
        "tls: cert_file and key_file go together");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert_file(), "tls.cert_file"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key_file(), "tls.key_file"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file().empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs,
                     ReadPem(tls.client_ca_file(), "tls.client_ca_file"));
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace

struct Server::Impl {
  // Declaration order is construction order; destruction runs backwards
  // (see the class comment).
  std::string host;
  int port = 0;
  model::PackageManifest manifest;
  std::unique_ptr<model::InstructBlipModel> model;
  std::unique_ptr<model::LmTokenizer> lm_tokenizer;
  std::unique_ptr<model::WordPieceTokenizer> qformer_tokenizer;
  std::unique_ptr<model::ImagePreprocessor> image_preprocessor;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<FeatureCache> feature_cache;
  std::unique_ptr<TorchModelRunner> runner;
  // Before the engine, so destroyed after it: the engine's last results
  // (failing what did not finish) still go through it.
  std::unique_ptr<WorkerPool> output_pool;
  std::unique_ptr<Engine> engine;
  // After the engine, so joined before it: its tasks submit to the engine.
  std::unique_ptr<WorkerPool> preprocess_pool;
  std::unique_ptr<ApiKeyAuth> auth;  // null: no API keys
  std::unique_ptr<GenerationPipeline> pipeline;
  std::unique_ptr<InferenceService> service;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<http::HttpFrontend> http;  // /metrics and the chat API
  std::unique_ptr<grpc::Server> grpc_server;

  void SetHealth(bool serving) { health->SetServing(serving); }

  absl::Status Warmup() {
    RETURN_IF_ERROR(engine->Admit());
    auto request = std::make_shared<GenerationRequest>();
    request->request_id = "warmup";
    request->internal = true;
    request->arrival = absl::Now();
    request->pixels.size = manifest.image.size;
    request->pixels.chw.assign(3ull * manifest.image.size * manifest.image.size,
                               0.0f);
    request->prompt_ids = lm_tokenizer->EncodePrompt("");
    request->qformer_ids = qformer_tokenizer->Encode("");
    request->settings.max_new_tokens = kWarmupTokens;
    auto sink = std::make_shared<WarmupSink>();
    auto result = sink->result();
    request->sink = sink;
    engine->Submit(std::move(request));
    if (result.wait_for(absl::ToChronoSeconds(kWarmupTimeout)) !=
        std::future_status::ready) {
      return absl::DeadlineExceededError("warm-up did not finish in time");
    }
    return result.get();
  }

  ~Impl() {
    if (health) health->Shutdown();
    if (grpc_server) grpc_server->Shutdown(std::chrono::system_clock::now());
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

int Server::port() const { return impl_->port; }
int Server::metrics_port() const {
  return impl_->http ? impl_->http->metrics_port() : 0;
}
int Server::http_port() const {
  return impl_->http ? impl_->http->api_port() : 0;
}
const std::string& Server::host() const { return impl_->host; }

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const Options& options) {
  const config::ServerConfig& config = options.config;
  auto impl = std::make_unique<Impl>();
  impl->host = config.host();

  ASSIGN_OR_RETURN(impl->manifest,
                   model::LoadPackageManifest(options.model_dir));
  const bool special_as_text = config.tokenizer().special_tokens_as_text();
  impl->manifest.lm_tokenizer.special_tokens_as_text = special_as_text;
  impl->manifest.qformer_tokenizer.special_tokens_as_text = special_as_text;
  const model::PackageManifest& manifest = impl->manifest;
  ASSIGN_OR_RETURN(impl->lm_tokenizer,
                   model::LmTokenizer::Load(manifest.lm_tokenizer));
  ASSIGN_OR_RETURN(impl->qformer_tokenizer,
                   model::WordPieceTokenizer::Load(manifest.qformer_tokenizer));
  model::RuntimeOptions runtime;
  runtime.device = config.runtime().device();
  runtime.num_threads = static_cast<int>(config.runtime().num_threads());
  if (runtime.num_threads == 0) {
    // The container's CPU limit, not the node's CPU count: more threads than
    // the quota only get throttled.
    std::string why;
    runtime.num_threads = AvailableCpus(&why);
    spdlog::info("runtime.num_threads 0: {} torch threads", why);
  }
  ASSIGN_OR_RETURN(impl->model,
                   model::InstructBlipModel::Load(manifest, runtime));

  const ServingLimits limits = ResolveLimits(config.limits(), manifest);
  impl->image_preprocessor = std::make_unique<model::ImagePreprocessor>(
      manifest.image, model::ImagePreprocessor::Limits{
                          limits.max_image_bytes, limits.max_image_pixels});
  impl->metrics = std::make_unique<Metrics>();
  impl->feature_cache = std::make_unique<FeatureCache>(
      config.cache().vision_cache_mib() << 20,
      config.cache().qformer_cache_mib() << 20, *impl->metrics);
  impl->runner = std::make_unique<TorchModelRunner>(*impl->model);
  // The request side: detokenization and stop sequences, off the engine
  // thread, in order per request.
  impl->output_pool = std::make_unique<WorkerPool>(1);
  Engine::Options engine_options = EngineOptionsFrom(config.scheduler());
  engine_options.decoder_start_token = manifest.decoder_start_token_id;
  ASSIGN_OR_RETURN(impl->engine,
                   Engine::Create(*impl->runner, manifest.eos_token_ids,
                                  *impl->metrics, engine_options,
                                  impl->feature_cache.get()));
  impl->engine->Start(
      [model = impl->model.get()] { model->BindCallingThread(); });
  impl->preprocess_pool = std::make_unique<WorkerPool>(
      static_cast<int>(config.runtime().preprocess_threads()));

  GenerationPipeline::Dependencies deps;
  deps.manifest = &impl->manifest;
  deps.engine = impl->engine.get();
  deps.lm_tokenizer = impl->lm_tokenizer.get();
  deps.qformer_tokenizer = impl->qformer_tokenizer.get();
  deps.image_preprocessor = impl->image_preprocessor.get();
  deps.preprocess_pool = impl->preprocess_pool.get();
  deps.output_pool = impl->output_pool.get();
  deps.metrics = impl->metrics.get();
  deps.feature_cache = impl->feature_cache.get();
  deps.limits = limits;
  deps.model_info = BuildModelInfo(manifest, limits, impl->model->device());
  impl->pipeline = std::make_unique<GenerationPipeline>(std::move(deps));
  if (!config.auth().api_keys_file().empty()) {
    ASSIGN_OR_RETURN(impl->auth,
                     ApiKeyAuth::LoadFile(config.auth().api_keys_file()));
  }
  impl->service =
      std::make_unique<InferenceService>(*impl->pipeline, impl->auth.get());
  HealthService::StallCheck stall_check;
  stall_check.progress = [engine = impl->engine.get()] {
    return engine->progress();
  };
  stall_check.timeout = absl::Seconds(config.engine_stall_timeout_s());
  impl->health = std::make_unique<HealthService>(
      std::set<std::string>{"", kServiceName},
      config.auth().health_exempt() ? nullptr : impl->auth.get(),
      std::move(stall_check));

  http::HttpFrontend::Dependencies http_deps;
  http_deps.pipeline = impl->pipeline.get();
  http_deps.auth = impl->auth.get();
  http_deps.registry = impl->metrics->registry();
  http_deps.model_id = manifest.model_id;
  ASSIGN_OR_RETURN(impl->http, http::HttpFrontend::Start(config, http_deps));

  ASSIGN_OR_RETURN(auto credentials, ServerCredentials(config.tls()));
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(config.host(), ":", config.port());
  builder.AddListeningPort(address, credentials, &impl->port);
  builder.RegisterService(impl->service.get());
  builder.RegisterService(impl->health.get());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(ReflectionAuthInterceptorFactory(impl->auth.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.SetMaxReceiveMessageSize(static_cast<int>(limits.max_request_bytes));
  // One connection cannot take every slot and queue place: calls beyond
  // this wait in the client until one of its streams ends.
  builder.AddChannelArgument(
      GRPC_ARG_MAX_CONCURRENT_STREAMS,
      static_cast<int>(config.limits().max_streams_per_connection()));
  if (config.max_connection_age_s() > 0) {
    // GOAWAY after this age: clients reconnect, and a load balancer spreads
    // the new connections over replicas added since.
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(config.max_connection_age_s()) * 1000);
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
        static_cast<int>(config.max_connection_age_grace_s()) * 1000);
  }
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address));
  }
  impl->SetHealth(false);

  const absl::Time warmup_start = absl::Now();
  if (absl::Status warm = impl->Warmup(); !warm.ok()) {
    return absl::InternalError(
        absl::StrCat("warm-up request failed: ", warm.message()));
  }
  spdlog::info("warm-up took {}",
               absl::FormatDuration(absl::Now() - warmup_start));
  impl->pipeline->SetAccepting(true);
  impl->SetHealth(true);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::Drain(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  impl_->SetHealth(false);  // Watch streams hear NOT_SERVING first
  impl_->pipeline->SetAccepting(false);
  impl_->engine->BeginDrain();
  // Health Watch streams never end by themselves and would hold the
  // shutdown below to its deadline.
  impl_->health->Shutdown();
  // Now, not once the streams are done: Shutdown closes the listener and
  // sends GOAWAY on every connection, so clients stop sending calls here at
  // once and balance them to other replicas, while the calls in flight run
  // on until the deadline (then gRPC cancels them). Blocks until then.
  impl_->grpc_server->Shutdown(absl::ToChronoTime(deadline));
  // Past the deadline, gRPC has cancelled the calls still running, even
  // where the engine had finished their requests and only the writes were
  // left.
  const bool calls_done = absl::Now() < deadline;
  // HTTP requests are not gRPC calls: they get what is left of the time.
  const bool idle = impl_->engine->WaitIdle(
      std::max(deadline - absl::Now(), absl::ZeroDuration()));
  spdlog::info(calls_done && idle
                   ? "drained: all requests finished"
                   : "drain timeout: cancelling the requests still running");
  // HTTP streams cut here end with an error event and [DONE].
  if (!idle && impl_->http) {
    impl_->http->AbortReplies(absl::UnavailableError(
        "the server is shutting down (drain timeout reached)"));
  }
}

}  // namespace iblip::server
