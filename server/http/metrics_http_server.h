#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}

namespace iblip::server {

// Serves GET /metrics (Prometheus text format 0.0.4) on its own thread.
//
// Why not prometheus-cpp's Exposer: its civetweb starts threads with a fixed
// ~100 KB stack, and in a process that loads libtorch glibc's per-thread
// static TLS no longer fits, so pthread_create fails with EINVAL ("null
// context when constructing CivetServer"). This server uses normal threads.
//
// One connection at a time with short socket timeouts: scrapes are small and
// rare, and a slow scraper cannot hold it for long.
class MetricsHttpServer {
 public:
  // Binds host:port (port 0 = any free port) and starts serving `registry`.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port,
      std::shared_ptr<prometheus::Registry> registry);
  // Stops accepting and joins the thread.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int port,
                    std::shared_ptr<prometheus::Registry> registry);
  void Serve();
  void HandleConnection(int fd);

  const int listen_fd_;
  const int port_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // started in the constructor, joined in the destructor
};

}  // namespace iblip::server
