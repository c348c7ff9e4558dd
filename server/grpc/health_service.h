#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/api_key_auth.h"
#include "server/engine/engine.h"

namespace iblip::server {

// True when work has waited longer than `timeout` for the engine to finish a
// step (a hung model call, a dead engine thread); a zero timeout never
// stalls. An idle engine is never stalled, however long ago its last step.
bool EngineStalled(const Engine::Progress& progress, absl::Time now,
                   absl::Duration timeout);

// grpc.health.v1.Health (Check and Watch) for the whole server ("") and the
// iblip.v1 service, plus "liveness" for Kubernetes' liveness probe. Ours
// rather than gRPC's built-in one so that it can sit behind API-key auth
// when the config says so (Kubernetes probes carry no key, so by default it
// is exempt), and so that it can see a stalled engine. Thread-safe.
//
// STATUS BY SERVICE NAME
//  "" and the services given: SERVING once SetServing(true) (after the
//    warm-up) until SetServing(false) (the drain), and while the engine is
//    not stalled (readiness: traffic leaves a stuck replica).
//  "liveness": SERVING unless the engine is stalled, also while starting or
//    draining, so a drain never looks like a dead process.
// A stall is noticed by Check (what probes use); Watch streams hear only
// SetServing changes.
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  static constexpr char kLivenessService[] = "liveness";

  // How liveness sees the engine; no `progress` or a zero `timeout`: never
  // stalled.
  struct StallCheck {
    std::function<Engine::Progress()> progress;
    absl::Duration timeout = absl::ZeroDuration();
  };

  // `auth` may be null: no key needed.
  HealthService(std::set<std::string> services, const ApiKeyAuth* auth,
                StallCheck stall_check)
      : services_(std::move(services)),
        auth_(auth),
        stall_check_(std::move(stall_check)) {}
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
  bool Stalled() const;  // logs when a stall starts and ends
  // The open Watch streams (references: gRPC may finish one meanwhile).
  std::vector<std::shared_ptr<Watcher>> Watchers();

  const std::set<std::string> services_;
  const ApiKeyAuth* const auth_;
  const StallCheck stall_check_;
  mutable std::atomic<bool> stall_reported_{false};
  mutable std::mutex mutex_;
  bool serving_ = false;    // guarded by mutex_
  bool shut_down_ = false;  // guarded by mutex_
  // Owns the Watch reactors until their OnDone.
  std::set<std::shared_ptr<Watcher>> watchers_;  // guarded by mutex_
};

}  // namespace iblip::server
