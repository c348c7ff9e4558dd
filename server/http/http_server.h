#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/api_key_auth.h"
#include "server/pipeline/generation_pipeline.h"
#include "server/http/chat_protocol.h"

namespace iblip::server::http {

// The optional HTTP listener (Boost.Beast) for chat frontends: the
// OpenAI-compatible POST /v1/chat/completions (streamed as server-sent
// events, or one JSON answer), GET /v1/models, and the web chat page at /.
// Requests go through the same GenerationPipeline as gRPC: validation,
// queue, scheduler, caches, metrics and drain.
//
// Threads: one accepts; each connection has its own (blocking reads and
// writes; at most max_connections, beyond which new connections get 503).
class HttpServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 0;  // 0 picks a free port
    int max_connections = 64;
    HistoryMode history = HistoryMode::kLatest;
    uint64_t max_body_bytes = 32u << 20;
    std::string model_id;
    const ApiKeyAuth* auth = nullptr;  // API keys for /v1/*; null: none
  };

  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const Options& options, GenerationPipeline& pipeline);
  // Stops accepting, closes open connections (their requests are
  // cancelled) and joins every thread.
  ~HttpServer();

  int port() const { return port_; }

 private:
  struct Impl;
  HttpServer() = default;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace iblip::server::http
