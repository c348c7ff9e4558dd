#include "server/grpc/health_service.h"

#include "server/grpc/grpc_auth.h"
#include "server/grpc/status_util.h"
#include "spdlog/spdlog.h"

namespace iblip::server {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: sends the status now and again whenever it changes (at
// most one write in flight; a change during a write is sent after it).
// Recursive mutex: gRPC may run OnWriteDone or OnDone inline in StartWrite
// or Finish. Never call it with the service's mutex held.
class HealthService::Watcher final
    : public grpc::ServerWriteReactor<HealthCheckResponse>,
      public std::enable_shared_from_this<Watcher> {
 public:
  Watcher(HealthService& owner, std::string service)
      : owner_(owner), service_(std::move(service)) {}

  void Send(Status status) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (finished_) return;
    if (writing_) {
      pending_ = status;
      has_pending_ = true;
      return;
    }
    StartWriteLocked(status);
  }
  void End() { Fail(grpc::Status::OK); }
  void Fail(const grpc::Status& status) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    writing_ = false;
    if (!ok) {
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status::CANCELLED);
      }
      return;
    }
    if (has_pending_ && !finished_) {
      has_pending_ = false;
      StartWriteLocked(pending_);
    }
  }
  void OnCancel() override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (!finished_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    }
  }
  void OnDone() override {
    // Drops the service's reference; the last holder deletes the reactor.
    std::shared_ptr<Watcher> self = shared_from_this();
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    owner_.watchers_.erase(self);
  }
  const std::string& service() const { return service_; }

 private:
  void StartWriteLocked(Status status) {
    writing_ = true;
    response_.set_status(status);
    StartWrite(&response_);
  }

  HealthService& owner_;
  const std::string service_;
  std::recursive_mutex mutex_;
  HealthCheckResponse response_;  // owned by the write in flight
  bool writing_ = false;
  bool finished_ = false;
  bool has_pending_ = false;
  Status pending_ = HealthCheckResponse::UNKNOWN;
};

bool EngineStalled(const Engine::Progress& progress, absl::Time now,
                   absl::Duration timeout) {
  return timeout > absl::ZeroDuration() && progress.work_pending &&
         now - progress.last_step_end > timeout;
}

HealthService::~HealthService() { Shutdown(); }

bool HealthService::Stalled() const {
  if (!stall_check_.progress) return false;
  const Engine::Progress progress = stall_check_.progress();
  const bool stalled =
      EngineStalled(progress, absl::Now(), stall_check_.timeout);
  if (stalled != stall_reported_.exchange(stalled)) {
    if (stalled) {
      spdlog::error(
          "engine stalled: no step finished for {} while work waits; health "
          "checks say NOT_SERVING (liveness restarts the pod)",
          absl::FormatDuration(absl::Now() - progress.last_step_end));
    } else {
      spdlog::info("engine making progress again");
    }
  }
  return stalled;
}

HealthService::Status HealthService::StatusOf(
    const std::string& service) const {
  const bool liveness = service == kLivenessService;
  if (!liveness && services_.count(service) == 0)
    return HealthCheckResponse::SERVICE_UNKNOWN;
  const bool up = (liveness || serving_) && !Stalled();
  return up ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

std::vector<std::shared_ptr<HealthService::Watcher>> HealthService::Watchers() {
  std::lock_guard<std::mutex> lock(mutex_);
  return {watchers_.begin(), watchers_.end()};
}

void HealthService::SetServing(bool serving) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    serving_ = serving;
  }
  for (const auto& watcher : Watchers()) {
    Status status;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      status = StatusOf(watcher->service());
    }
    watcher->Send(status);
  }
}

void HealthService::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shut_down_ = true;
  }
  for (const auto& watcher : Watchers()) watcher->End();
}

grpc::ServerUnaryReactor* HealthService::Check(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request,
    HealthCheckResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const Status status = StatusOf(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "service: unknown service name"));
    return reactor;
  }
  response->set_status(status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  auto watcher = std::make_shared<Watcher>(*this, request->service());
  Status status;
  bool shut_down;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    watchers_.insert(watcher);  // until its OnDone
    status = StatusOf(request->service());
    shut_down = shut_down_;
  }
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    watcher->Fail(ToGrpcStatus(auth));
  } else if (shut_down) {
    watcher->End();
  } else {
    watcher->Send(status);
  }
  return watcher.get();
}

}  // namespace iblip::server
