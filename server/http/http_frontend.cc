#include "server/http/http_frontend.h"

#include <prometheus/registry.h>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/http/api_routes.h"
#include "server/http/http_metrics.h"
#include "server/http/http_server.h"

namespace iblip::server::http {
namespace {

// Chat requests into the same pipeline as gRPC's; cancelling marks the
// engine's request, which drops it within one decode step.
class PipelineChatBackend final : public ChatBackend {
 public:
  explicit PipelineChatBackend(GenerationPipeline& pipeline)
      : pipeline_(pipeline) {}

  std::string NewRequestId() override { return pipeline_.NewRequestId(); }

  std::function<void()> Start(const v1::GenerateRequest& request,
                              const std::string& request_id,
                              std::shared_ptr<ResponseSink> sink) override {
    // Weak: the request holds the sink, which holds this canceller.
    std::weak_ptr<GenerationRequest> created;
    pipeline_.Start(request, request_id, absl::InfiniteFuture(),
                    std::move(sink),
                    [&created](const std::shared_ptr<GenerationRequest>& g) {
                      created = g;
                    });
    return [created] {
      if (auto generation = created.lock()) generation->cancelled.store(true);
    };
  }

 private:
  GenerationPipeline& pipeline_;
};

HttpLimits LimitsFrom(const config::HttpConfig& http) {
  HttpLimits limits;
  limits.max_header_bytes = http.max_header_bytes();
  limits.max_url_bytes = http.max_url_bytes();
  limits.max_body_bytes = http.max_body_bytes();
  limits.idle_timeout = absl::Seconds(http.idle_timeout_s());
  limits.header_timeout = absl::Seconds(http.header_timeout_s());
  limits.body_timeout = absl::Seconds(http.body_timeout_s());
  limits.write_timeout = absl::Seconds(http.write_timeout_s());
  return limits;
}

HttpServer::Listener MakeListener(const char* name, const std::string& host,
                                  uint32_t port, const config::HttpConfig& http,
                                  std::shared_ptr<const Router> router) {
  HttpServer::Listener listener;
  listener.name = name;
  listener.host = host;
  listener.port = static_cast<int>(port);
  listener.max_connections = static_cast<int>(http.max_connections());
  listener.limits = LimitsFrom(http);
  listener.router = std::move(router);
  return listener;
}

std::vector<std::string> Origins(const std::string& list) {
  std::vector<std::string> origins;
  for (absl::string_view origin : absl::StrSplit(list, ',')) {
    origin = absl::StripAsciiWhitespace(origin);
    if (!origin.empty()) origins.emplace_back(origin);
  }
  return origins;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpFrontend>> HttpFrontend::Start(
    const config::ServerConfig& config, Dependencies deps) {
  const config::HttpConfig& http = config.http();
  if (!config.metrics_enabled() && !http.enabled()) return nullptr;
  std::unique_ptr<HttpFrontend> frontend(new HttpFrontend());
  frontend->metrics_ = std::make_unique<HttpMetrics>(*deps.registry);

  HttpServer::Options options;
  options.io_threads = static_cast<int>(http.io_threads());
  options.handler_threads = static_cast<int>(http.handler_threads());
  options.on_exchange =
      [metrics = frontend->metrics_.get()](const AccessRecord& record) {
        metrics->Count(record);
      };
  if (config.metrics_enabled()) {
    auto router = std::make_shared<Router>();
    AddMetricsRoute(*router, deps.registry);
    if (!config.auth().metrics_exempt()) router->RequireKey("/", deps.auth);
    HttpServer::Listener metrics = MakeListener(
        "metrics", config.host(), config.metrics_port(), http, router);
    metrics.limits.max_body_bytes = 0;  // scrapes send none
    options.listeners.push_back(std::move(metrics));
  }
  if (http.enabled()) {
    frontend->backend_ = std::make_unique<PipelineChatBackend>(*deps.pipeline);
    ApiOptions api;
    api.model_id = deps.model_id;
    api.model_info = deps.pipeline->deps().model_info;
    // The config loader accepted only the two names.
    api.history.mode =
        HistoryModeFromName(http.history()).value_or(HistoryMode::kLatest);
    api.history.selectable = http.history_selectable();
    api.json.max_depth = http.max_json_depth();
    api.json.max_elements = http.max_json_elements();
    api.backend = frontend->backend_.get();
    api.auth = deps.auth;
    auto router = std::make_shared<Router>();
    AddApiRoutes(*router, api);
    router->AllowOrigins(Origins(http.cors_origins()));
    HttpServer::Listener listener =
        MakeListener("api", config.host(), http.port(), http, router);
    if (http.tls()) {
      listener.tls = {config.tls().cert_file(), config.tls().key_file(),
                      config.tls().client_ca_file()};
    }
    options.listeners.push_back(std::move(listener));
  }
  ASSIGN_OR_RETURN(frontend->server_, HttpServer::Start(std::move(options)));
  return frontend;
}

HttpFrontend::~HttpFrontend() = default;

int HttpFrontend::api_port() const { return server_->port("api"); }
int HttpFrontend::metrics_port() const { return server_->port("metrics"); }

void HttpFrontend::AbortReplies(const absl::Status& status) {
  server_->AbortReplies(status);
}

}  // namespace iblip::server::http
