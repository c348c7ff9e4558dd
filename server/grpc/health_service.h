#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "server/api_key_auth.h"

namespace iblip::server {

// grpc.health.v1.Health (Check and Watch) for the whole server ("") and the
// iblip.v1 service. Ours rather than gRPC's built-in one so that it can sit
// behind API-key auth when the config says so (Kubernetes probes carry no
// key, so by default it is exempt). Thread-safe.
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // `auth` may be null: no key needed.
  HealthService(std::set<std::string> services, const ApiKeyAuth* auth)
      : services_(std::move(services)), auth_(auth) {}
  ~HealthService() override;

  void SetServing(bool serving);
  // Ends every Watch stream (before the gRPC server shuts down).
  void Shutdown();

  grpc::ServerUnaryReactor* Check(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;
  Status StatusOf(const std::string& service) const;  // mutex_ held
  // The open Watch streams (references: gRPC may finish one meanwhile).
  std::vector<std::shared_ptr<Watcher>> Watchers();

  const std::set<std::string> services_;
  const ApiKeyAuth* const auth_;
  mutable std::mutex mutex_;
  bool serving_ = false;    // guarded by mutex_
  bool shut_down_ = false;  // guarded by mutex_
  // Owns the Watch reactors until their OnDone.
  std::set<std::shared_ptr<Watcher>> watchers_;  // guarded by mutex_
};

}  // namespace iblip::server
