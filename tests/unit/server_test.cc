// The whole server in-process on 127.0.0.1 (free port) with the tiny
// package: streaming, concurrency, admission, slow readers, health and
// drain, through real gRPC stubs. (Deadlines, the client's and the server's,
// are tested through the server binary and its metrics in
// tests/python/test_scheduling.py: only the server's side shows them.)
#include "server/server.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "config/config_loader.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "iblip/v1/iblip.grpc.pb.h"
#include "tests/unit/test_package.h"

namespace iblip::server {
namespace {

using testing::EncodeSolidImage;

struct Running {
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::InstructBlipService::Stub> stub;
};

Running StartServer(
    std::function<void(config::ServerConfig&)> customize = nullptr) {
  config::ServerConfig config;
  config.set_host("127.0.0.1");
  config.set_port(0);
  config.set_metrics_enabled(false);
  config.mutable_runtime()->set_num_threads(1);
  if (customize) customize(config);
  auto resolved = config::WithDefaults(config);
  EXPECT_TRUE(resolved.ok()) << resolved.status();
  auto server = Server::Create({testing::TinyPackageDir(), *resolved});
  EXPECT_TRUE(server.ok()) << server.status();
  Running running;
  running.server = std::move(*server);
  running.channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(running.server->port()),
                          grpc::InsecureChannelCredentials());
  running.stub = v1::InstructBlipService::NewStub(running.channel);
  return running;
}

v1::GenerateRequest Request(const std::string& prompt, int max_new_tokens,
                            int min_new_tokens = 0) {
  v1::GenerateRequest request;
  request.add_images()->set_data(EncodeSolidImage(64, 48, 200, 30, 30));
  request.set_prompt(prompt);
  request.mutable_parameters()->set_max_new_tokens(max_new_tokens);
  if (min_new_tokens > 0)
    request.mutable_parameters()->set_min_new_tokens(min_new_tokens);
  return request;
}

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> messages;
  std::vector<int32_t> tokens;  // sequence 0
};

StreamResult Stream(
    v1::InstructBlipService::Stub& stub, const v1::GenerateRequest& request,
    absl::Duration deadline = absl::Seconds(60),
    absl::Duration pause_before_reading = absl::ZeroDuration()) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  StreamResult result;
  auto reader = stub.Generate(&context, request);
  if (pause_before_reading > absl::ZeroDuration())
    absl::SleepFor(pause_before_reading);
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    if (message.index() == 0)
      result.tokens.insert(result.tokens.end(), message.token_ids().begin(),
                           message.token_ids().end());
    result.messages.push_back(message);
  }
  result.status = reader->Finish();
  return result;
}

std::vector<int32_t> Unary(v1::InstructBlipService::Stub& stub,
                           const v1::GenerateRequest& request) {
  grpc::ClientContext context;
  v1::GenerateUnaryResponse response;
  grpc::Status status = stub.GenerateUnary(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  if (response.sequences().empty()) return {};
  const auto& ids = response.sequences(0).token_ids();
  return {ids.begin(), ids.end()};
}

TEST(ServerTest, StreamIsOrderedCompleteAndEndsWithUsage) {
  Running running = StartServer();
  const v1::GenerateRequest request = Request("describe the image", 16, 16);
  StreamResult stream = Stream(*running.stub, request);
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  ASSERT_GE(stream.messages.size(), 2u);
  uint64_t last_elapsed = 0;
  for (size_t i = 0; i + 1 < stream.messages.size(); ++i) {
    EXPECT_FALSE(stream.messages[i].has_usage());
    EXPECT_GE(stream.messages[i].elapsed_us(), last_elapsed);
    last_elapsed = stream.messages[i].elapsed_us();
  }
  const v1::GenerateResponse& last = stream.messages.back();
  ASSERT_TRUE(last.has_usage());
  EXPECT_EQ(last.usage().generated_tokens(), 16u);
  EXPECT_EQ(stream.tokens.size(), 16u);
  EXPECT_EQ(stream.tokens, Unary(*running.stub, request));
}

TEST(ServerTest, ConcurrentClientsGetTheirAloneGreedyOutputs) {
  Running running = StartServer();
  const std::vector<std::string> prompts = {"describe",
                                            "what color is it?",
                                            "how many shapes",
                                            "is there a star?",
                                            "where is the circle?",
                                            "a short caption",
                                            "what is this",
                                            "hello"};
  std::vector<std::vector<int32_t>> alone;
  for (const auto& prompt : prompts)
    alone.push_back(Unary(*running.stub, Request(prompt, 12)));
  std::vector<std::future<StreamResult>> together;
  for (const auto& prompt : prompts) {
    together.push_back(std::async(std::launch::async, [&, prompt] {
      return Stream(*running.stub, Request(prompt, 12));
    }));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    StreamResult result = together[i].get();
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.tokens, alone[i]) << prompts[i];
  }
}

TEST(ServerTest, AFullQueueAnswersResourceExhaustedAtOnce) {
  Running running = StartServer([](config::ServerConfig& c) {
    c.mutable_scheduler()->set_max_queue_size(1);
    c.mutable_scheduler()->set_max_running_sequences(1);
  });
  std::vector<std::future<std::pair<grpc::StatusCode, absl::Duration>>> calls;
  for (int i = 0; i < 16; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      const absl::Time start = absl::Now();
      StreamResult result = Stream(*running.stub, Request("describe", 40, 40));
      return std::make_pair(result.status.error_code(), absl::Now() - start);
    }));
  }
  int ok = 0, exhausted = 0;
  for (auto& call : calls) {
    auto [code, took] = call.get();
    if (code == grpc::StatusCode::OK) ++ok;
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_LT(took, absl::Seconds(1));  // refused, not queued
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  EXPECT_EQ(ok + exhausted, 16);
}

TEST(ServerTest, ASlowReaderGetsEverythingInFewerMessages) {
  Running running = StartServer();
  // A tiny HTTP/2 receive window, so the server's writes really wait for
  // the reader (otherwise socket buffers absorb a short answer).
  grpc::ChannelArguments args;
  args.SetInt("grpc.http2.lookahead_bytes", 256);
  args.SetInt("grpc.http2.bdp_probe", 0);
  auto slow_stub = v1::InstructBlipService::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(running.server->port()),
      grpc::InsecureChannelCredentials(), args));
  const v1::GenerateRequest request = Request("describe", 60, 60);
  StreamResult slow = Stream(*slow_stub, request, absl::Seconds(60),
                             /*pause_before_reading=*/absl::Milliseconds(500));
  ASSERT_TRUE(slow.status.ok()) << slow.status.error_message();
  EXPECT_EQ(slow.tokens, Unary(*running.stub, request));
  // Tokens made while nobody read were merged, not queued one by one.
  EXPECT_LT(slow.messages.size(), 30u);
  std::string text;
  for (const auto& m : slow.messages) text += m.text();
  EXPECT_FALSE(text.empty());
}

grpc::health::v1::HealthCheckResponse::ServingStatus Health(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return response.status();
}

TEST(ServerTest, DrainTurnsHealthNotServingRefusesNewWorkAndFinishesRunning) {
  Running running = StartServer();
  using grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(Health(running.channel, ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(running.channel, "iblip.v1.InstructBlipService"),
            HealthCheckResponse::SERVING);
  // A Watch opened before the drain hears it (new calls cannot: the drain
  // closes the listener and sends GOAWAY at once).
  auto health = grpc::health::v1::Health::NewStub(running.channel);
  grpc::ClientContext watch_context;
  grpc::health::v1::HealthCheckRequest watched;
  watched.set_service("iblip.v1.InstructBlipService");
  auto watch = health->Watch(&watch_context, watched);
  HealthCheckResponse heard;
  ASSERT_TRUE(watch->Read(&heard));
  EXPECT_EQ(heard.status(), HealthCheckResponse::SERVING);

  // Long enough (the tiny model's context allows ~470) to still be
  // generating when the drain starts: it starts once the first token came.
  const int tokens = 450;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader =
      running.stub->Generate(&context, Request("describe", tokens, tokens));
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  size_t received = message.token_ids_size();
  auto drain = std::async(std::launch::async,
                          [&] { running.server->Drain(absl::Seconds(30)); });
  ASSERT_TRUE(watch->Read(&heard));
  EXPECT_EQ(heard.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(watch->Read(&heard));  // the drain ends Watch streams
  EXPECT_TRUE(watch->Finish().ok());
  // GOAWAY: the channel stops using its connection (still carrying the
  // stream), and a new call finds no listener.
  grpc_connectivity_state state = running.channel->GetState(false);
  const auto give_up = absl::ToChronoTime(absl::Now() + absl::Seconds(30));
  while (state == GRPC_CHANNEL_READY &&
         running.channel->WaitForStateChange(state, give_up)) {
    state = running.channel->GetState(false);
  }
  EXPECT_NE(state, GRPC_CHANNEL_READY);
  StreamResult refused = Stream(*running.stub, Request("hi", 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The request in flight still gets every token.
  while (reader->Read(&message)) {
    if (message.index() == 0) received += message.token_ids_size();
  }
  grpc::Status finished = reader->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  EXPECT_EQ(received, static_cast<size_t>(tokens));
  drain.get();
}

}  // namespace
}  // namespace iblip::server
