#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "config/server_config.pb.h"

namespace iblip::server {

// The whole serving process minus main(): loads the model package, starts
// the engine, the preprocessing pool, the gRPC server (iblip.v1, health,
// reflection) and the metrics endpoint, and warms up before reporting
// SERVING.
//
// Shutdown order (destructor): gRPC server (cancels what is left), HTTP
// (/metrics and the chat API; streams still open end with an error event and
// [DONE]), preprocessing pool (its tasks may still submit), engine (fails what it
// never started), model.
class Server {
 public:
  struct Options {
    std::string model_dir;
    config::ServerConfig config;  // resolved with config::WithDefaults
  };

  static absl::StatusOr<std::unique_ptr<Server>> Create(const Options& options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;          // the bound gRPC port
  int metrics_port() const;  // 0 when metrics are disabled
  int http_port() const;     // 0 when the HTTP API is disabled
  const std::string& host() const;

  // Graceful drain, all at once at the start: health NOT_SERVING, new
  // requests UNAVAILABLE, the gRPC listener closed and GOAWAY sent (clients
  // move to other replicas now). Admitted requests get up to `timeout` to
  // finish; those still running then are cancelled.
  void Drain(absl::Duration timeout);

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iblip::server
