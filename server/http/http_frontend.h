#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/server_config.pb.h"
#include "server/api_key_auth.h"
#include "server/pipeline/generation_pipeline.h"

namespace prometheus {
class Registry;
}

namespace iblip::server::http {

class ChatBackend;
class HttpMetrics;
class HttpServer;

// The server's HTTP, from the config: /metrics on metrics_port
// (metrics_enabled; a key only with auth.metrics_exempt false) and the
// OpenAI-compatible API with the web page on http.port (http.enabled; TLS
// with the tls.* files unless http.tls is false). Chat requests go into the
// GenerationPipeline like gRPC ones.
class HttpFrontend {
 public:
  struct Dependencies {
    GenerationPipeline* pipeline = nullptr;
    const ApiKeyAuth* auth = nullptr;  // null: no keys
    std::shared_ptr<prometheus::Registry> registry;
    std::string model_id;
  };

  // Null when neither listener is enabled.
  static absl::StatusOr<std::unique_ptr<HttpFrontend>> Start(
      const config::ServerConfig& config, Dependencies deps);
  ~HttpFrontend();

  int api_port() const;      // 0: not serving the API
  int metrics_port() const;  // 0: not serving /metrics
  // See HttpServer::AbortReplies.
  void AbortReplies(const absl::Status& status);

 private:
  HttpFrontend() = default;
  std::unique_ptr<ChatBackend> backend_;
  std::unique_ptr<HttpMetrics> metrics_;
  std::unique_ptr<HttpServer> server_;  // last: stops before the others go
};

}  // namespace iblip::server::http
