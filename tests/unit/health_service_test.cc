// grpc.health.v1 as the probes see it: readiness follows warm-up, drain and
// a stalled engine; "liveness" only a stalled engine.
#include "server/grpc/health_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

namespace iblip::server {
namespace {

using grpc::health::v1::HealthCheckResponse;

TEST(EngineStalledTest, OnlyPendingWorkPastTheTimeoutIsAStall) {
  const absl::Time now = absl::Now();
  const absl::Duration timeout = absl::Seconds(60);
  EXPECT_FALSE(EngineStalled({now - absl::Seconds(59), true}, now, timeout));
  EXPECT_TRUE(EngineStalled({now - absl::Seconds(61), true}, now, timeout));
  // Idle for a day is not stuck.
  EXPECT_FALSE(EngineStalled({now - absl::Hours(24), false}, now, timeout));
  // A zero timeout turns the check off.
  EXPECT_FALSE(
      EngineStalled({now - absl::Hours(24), true}, now, absl::ZeroDuration()));
}

// The service on 127.0.0.1 (free port) with an engine progress the test sets.
class HealthServiceTest : public ::testing::Test {
 protected:
  HealthServiceTest() {
    HealthService::StallCheck check;
    check.progress = [this] {
      std::lock_guard<std::mutex> lock(mutex_);
      return progress_;
    };
    check.timeout = absl::Seconds(60);
    service_ = std::make_unique<HealthService>(
        std::set<std::string>{"", "iblip.v1.InstructBlipService"}, nullptr,
        std::move(check));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }
  ~HealthServiceTest() override {
    service_->Shutdown();
    server_->Shutdown();
  }

  void SetProgress(absl::Duration since_last_step, bool pending) {
    std::lock_guard<std::mutex> lock(mutex_);
    progress_ = {absl::Now() - since_last_step, pending};
  }
  HealthCheckResponse::ServingStatus Check(const std::string& service) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    grpc::Status status = stub_->Check(&context, request, &response);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND)
      return HealthCheckResponse::SERVICE_UNKNOWN;
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  std::mutex mutex_;
  Engine::Progress progress_{absl::Now(), false};
  std::unique_ptr<HealthService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::health::v1::Health::Stub> stub_;
};

TEST_F(HealthServiceTest, LivenessStaysUpWhileStartingAndDraining) {
  EXPECT_EQ(Check(""), HealthCheckResponse::NOT_SERVING);  // not warmed up
  EXPECT_EQ(Check(HealthService::kLivenessService),
            HealthCheckResponse::SERVING);
  service_->SetServing(true);
  EXPECT_EQ(Check(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Check("iblip.v1.InstructBlipService"),
            HealthCheckResponse::SERVING);
  service_->SetServing(false);  // draining
  EXPECT_EQ(Check("iblip.v1.InstructBlipService"),
            HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(HealthService::kLivenessService),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(Check("other"), HealthCheckResponse::SERVICE_UNKNOWN);
}

TEST_F(HealthServiceTest,
       AStalledEngineFailsLivenessAndReadinessUntilItMovesAgain) {
  service_->SetServing(true);
  SetProgress(absl::Hours(2), /*pending=*/false);  // idle: fine
  EXPECT_EQ(Check(HealthService::kLivenessService),
            HealthCheckResponse::SERVING);
  SetProgress(absl::Seconds(30), /*pending=*/true);  // busy, within the limit
  EXPECT_EQ(Check(HealthService::kLivenessService),
            HealthCheckResponse::SERVING);
  SetProgress(absl::Seconds(90), /*pending=*/true);  // stuck
  EXPECT_EQ(Check(HealthService::kLivenessService),
            HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check("iblip.v1.InstructBlipService"),
            HealthCheckResponse::NOT_SERVING);
  SetProgress(absl::ZeroDuration(), /*pending=*/true);  // a step finished
  EXPECT_EQ(Check(HealthService::kLivenessService),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(Check(""), HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace iblip::server
