// The HTTP server over real sockets on 127.0.0.1: slow and idle clients,
// timeouts, the connection bound, clients that leave or stop reading, and
// replies cut at shutdown. Short limits keep it quick; every wait is for a
// condition, with a generous deadline.

#include "server/http/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "tests/unit/http_test_util.h"

namespace iblip::server::http {
namespace {

// A reply the test drives: held until cancelled, or streaming without end.
class TestReply final : public PendingReply {
 public:
  enum class Mode { kHold, kHoldStream, kEndless };
  explicit TestReply(Mode mode) : mode_(mode) {}

  void SetWaker(std::function<void()> wake) override {
    absl::MutexLock lock(&mutex_);
    waker_ = std::move(wake);
  }

  ReplyPart Next() override {
    absl::MutexLock lock(&mutex_);
    ReplyPart part;
    if (ended_) return part;
    if (mode_ != Mode::kHold && !started_) {
      started_ = true;
      part.kind = ReplyPart::Kind::kStreamStart;
      part.response.content_type = "text/event-stream";
      return part;
    }
    if (cancelled_) {
      ended_ = true;
      if (mode_ == Mode::kHold) {
        part.kind = ReplyPart::Kind::kResponse;
        part.response = ErrorResponse(status_);
      } else {
        part.kind = ReplyPart::Kind::kStreamEnd;
        part.data = "data: {\"error\": \"" + std::string(status_.message()) +
                    "\"}\n\ndata: [DONE]\n\n";
      }
      return part;
    }
    if (mode_ == Mode::kEndless) {
      part.kind = ReplyPart::Kind::kStreamData;
      part.data.assign(64 * 1024, 'x');
    }
    return part;
  }

  void Cancel(const absl::Status& status) override {
    absl::MutexLock lock(&mutex_);
    if (cancelled_) return;
    cancelled_ = true;
    status_ = status;
    if (waker_) waker_();
  }

  bool WaitCancelled(absl::Duration timeout) {
    absl::MutexLock lock(&mutex_);
    return mutex_.AwaitWithTimeout(absl::Condition(&cancelled_), timeout);
  }

 private:
  const Mode mode_;
  absl::Mutex mutex_;
  std::function<void()> waker_ ABSL_GUARDED_BY(mutex_);
  bool started_ ABSL_GUARDED_BY(mutex_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
  bool ended_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
};

// A blocking client socket with a receive timeout.
class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address)) == 0;
    timeval timeout{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~Client() { Close(); }
  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool Send(const std::string& data) {
    return send(fd_, data.data(), data.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(data.size());
  }
  // Reads until `done` holds for what arrived, the peer closes (sets
  // closed()), or 10 s pass.
  template <class Done>
  std::string ReadUntil(Done done) {
    char buffer[65536];
    while (!done(received_)) {
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        closed_ = n == 0 || errno == ECONNRESET;
        break;
      }
      received_.append(buffer, static_cast<size_t>(n));
    }
    return received_;
  }
  std::string ReadResponse() {
    return ReadUntil([](const std::string& got) {
      bool complete = false;
      return !testing::ParseResponses(got, false, &complete).empty() &&
             complete;
    });
  }
  std::string ReadToClose() {
    return ReadUntil([](const std::string&) { return false; });
  }
  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string received_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(const HttpLimits& limits, int max_connections = 64) {
    auto router = std::make_shared<Router>();
    router->Get("/fast", [](HttpRequest&) -> Reply {
      HttpResponse response;
      response.content_type = "text/plain";
      response.body = "ok";
      return response;
    });
    for (auto [path, mode] :
         {std::pair{"/hold", TestReply::Mode::kHold},
          std::pair{"/hold-stream", TestReply::Mode::kHoldStream},
          std::pair{"/endless", TestReply::Mode::kEndless}}) {
      router->Get(path, [this, mode = mode](HttpRequest&) -> Reply {
        auto reply = std::make_shared<TestReply>(mode);
        absl::MutexLock lock(&mutex_);
        replies_.push_back(reply);
        return std::shared_ptr<PendingReply>(reply);
      });
    }
    HttpServer::Options options;
    HttpServer::Listener listener;
    listener.name = "test";
    listener.limits = limits;
    listener.max_connections = max_connections;
    listener.router = std::move(router);
    options.listeners.push_back(std::move(listener));
    options.on_exchange = [this](const AccessRecord& record) {
      absl::MutexLock lock(&mutex_);
      records_.push_back(record);
    };
    auto server = HttpServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    port_ = server_->port("test");
  }

  std::shared_ptr<TestReply> WaitForReply() {
    absl::MutexLock lock(&mutex_);
    auto some = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return !replies_.empty();
    };
    EXPECT_TRUE(
        mutex_.AwaitWithTimeout(absl::Condition(&some), absl::Seconds(10)));
    return replies_.empty() ? nullptr : replies_.back();
  }

  // Waits until an exchange ended with `note`.
  bool WaitForNote(const std::string& note) {
    absl::MutexLock lock(&mutex_);
    auto noted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      for (const AccessRecord& record : records_) {
        if (record.note == note) return true;
      }
      return false;
    };
    return mutex_.AwaitWithTimeout(absl::Condition(&noted), absl::Seconds(10));
  }

  absl::Mutex mutex_;
  std::vector<std::shared_ptr<TestReply>> replies_ ABSL_GUARDED_BY(mutex_);
  std::vector<AccessRecord> records_ ABSL_GUARDED_BY(mutex_);
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpServerTest, SlowClientsDoNotDelayOthers) {
  HttpLimits limits;
  limits.header_timeout = absl::Seconds(30);
  StartServer(limits);
  // Slowloris: most of the connection bound, each with a request begun.
  std::vector<std::unique_ptr<Client>> slow;
  for (int i = 0; i < 60; ++i) {
    slow.push_back(std::make_unique<Client>(port_));
    ASSERT_TRUE(slow.back()->Send("GET /fast HTTP/1.1\r\nX-Slow: "));
  }
  // And one that asks for an answer and never reads it.
  Client stuck(port_);
  ASSERT_TRUE(stuck.Send(testing::Request("GET", "/endless")));
  const absl::Time start = absl::Now();
  Client normal(port_);
  ASSERT_TRUE(normal.Send(testing::Request("GET", "/fast")));
  auto responses = testing::ParseResponses(normal.ReadResponse());
  const absl::Duration took = absl::Now() - start;
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].body, "ok");
  EXPECT_LT(took, absl::Seconds(1));
}

TEST_F(HttpServerTest, HeaderBodyAndIdleTimeoutsClose) {
  HttpLimits limits;
  limits.header_timeout = absl::Milliseconds(300);
  limits.body_timeout = absl::Milliseconds(300);
  limits.idle_timeout = absl::Milliseconds(300);
  StartServer(limits);
  Client header(port_), body(port_), idle(port_);
  ASSERT_TRUE(header.Send("GET /fast HTTP/1.1\r\nHost: x\r\n"));
  ASSERT_TRUE(body.Send("GET /fast HTTP/1.1\r\nContent-Length: 10\r\n\r\n12"));
  ASSERT_TRUE(idle.Send(testing::Request("GET", "/fast")));
  EXPECT_EQ(testing::ParseResponses(idle.ReadResponse()).size(), 1u);
  const absl::Time start = absl::Now();
  header.ReadToClose();
  body.ReadToClose();
  idle.ReadToClose();
  EXPECT_TRUE(header.closed() && body.closed() && idle.closed());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_TRUE(
      WaitForNote("timed out reading the header (http.header_timeout_s)"));
  EXPECT_TRUE(WaitForNote("timed out reading the body (http.body_timeout_s)"));
}

TEST_F(HttpServerTest, AtTheBoundIdleAndSlowConnectionsMakeRoom) {
  HttpLimits limits;
  limits.header_timeout = absl::Seconds(30);
  StartServer(limits, /*max_connections=*/4);
  Client idle(port_);
  ASSERT_TRUE(idle.Send(testing::Request("GET", "/fast")));
  idle.ReadResponse();
  std::vector<std::unique_ptr<Client>> slow;
  for (int i = 0; i < 3; ++i) {
    slow.push_back(std::make_unique<Client>(port_));
    ASSERT_TRUE(slow.back()->Send("GET /fast HTTP/1.1\r\nX-Slow: "));
  }
  // Four new clients (kept open): each takes the place of one that waits
  // for a request (which of the idle and the slow ones goes first depends
  // on when the server's write of the idle one's answer completed, a race
  // with the slow ones' accepts), so all four old ones make room.
  std::vector<std::unique_ptr<Client>> fresh;
  for (int i = 0; i < 4; ++i) {
    fresh.push_back(std::make_unique<Client>(port_));
    ASSERT_TRUE(fresh.back()->Send(testing::Request("GET", "/fast")));
    auto responses = testing::ParseResponses(fresh.back()->ReadResponse());
    ASSERT_EQ(responses.size(), 1u);
    EXPECT_EQ(responses[0].status, 200);
  }
  idle.ReadToClose();
  EXPECT_TRUE(idle.closed());
  for (auto& client : slow) {
    client->ReadToClose();
    EXPECT_TRUE(client->closed());
  }
  EXPECT_TRUE(
      WaitForNote("closed at http.max_connections: its header was still "
                  "arriving"));
}

TEST_F(HttpServerTest, WhenEveryConnectionIsBusyA503AtOnce) {
  StartServer(HttpLimits(), /*max_connections=*/2);
  auto first = std::make_unique<Client>(port_);
  Client second(port_);
  ASSERT_TRUE(first->Send(testing::Request("GET", "/hold")));
  ASSERT_TRUE(second.Send(testing::Request("GET", "/hold")));
  for (absl::Time deadline = absl::Now() + absl::Seconds(10);;) {
    {
      absl::MutexLock lock(&mutex_);
      if (replies_.size() == 2) break;
    }
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(5));
  }
  Client third(port_);
  auto refused = testing::ParseResponses(third.ReadResponse());
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].status, 503);
  // A slot that frees is served again.
  first->Close();
  for (absl::Time deadline = absl::Now() + absl::Seconds(10);;) {
    Client again(port_);
    ASSERT_TRUE(again.Send(testing::Request("GET", "/fast")));
    auto responses = testing::ParseResponses(again.ReadResponse());
    ASSERT_EQ(responses.size(), 1u);
    if (responses[0].status == 200) break;
    ASSERT_LT(absl::Now(), deadline) << "the slot never came back";
    absl::SleepFor(absl::Milliseconds(20));
  }
}

TEST_F(HttpServerTest, AClientThatLeavesCancelsItsPendingReply) {
  StartServer(HttpLimits());
  Client client(port_);
  ASSERT_TRUE(client.Send(testing::Request("GET", "/hold")));
  std::shared_ptr<TestReply> reply = WaitForReply();
  ASSERT_NE(reply, nullptr);
  client.Close();
  EXPECT_TRUE(reply->WaitCancelled(absl::Seconds(10)));
}

TEST_F(HttpServerTest, AClientThatStopsReadingIsDroppedAfterTheWriteTimeout) {
  HttpLimits limits;
  limits.write_timeout = absl::Milliseconds(300);
  StartServer(limits);
  Client client(port_);
  ASSERT_TRUE(client.Send(testing::Request("GET", "/endless")));
  std::shared_ptr<TestReply> reply = WaitForReply();
  ASSERT_NE(reply, nullptr);
  EXPECT_TRUE(reply->WaitCancelled(absl::Seconds(10)));
  EXPECT_TRUE(WaitForNote("the client stopped reading (http.write_timeout_s)"));
}

TEST_F(HttpServerTest, AbortRepliesEndsStreamsWithTheirLastPart) {
  StartServer(HttpLimits());
  Client client(port_);
  ASSERT_TRUE(client.Send(testing::Request("GET", "/hold-stream")));
  ASSERT_NE(WaitForReply(), nullptr);
  client.ReadUntil([](const std::string& got) {
    return got.find("\r\n\r\n") != std::string::npos;
  });
  server_->AbortReplies(absl::UnavailableError("drain timeout"));
  const std::string received = client.ReadToClose();
  EXPECT_TRUE(client.closed());
  bool complete = false;
  auto responses = testing::ParseResponses(received, false, &complete);
  ASSERT_TRUE(complete) << received;
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].body,
            "data: {\"error\": \"drain timeout\"}\n\ndata: [DONE]\n\n");
}

TEST_F(HttpServerTest, StoppingWithOpenConnectionsReturns) {
  StartServer(HttpLimits());
  Client idle(port_), holding(port_), reading(port_);
  ASSERT_TRUE(holding.Send(testing::Request("GET", "/hold")));
  ASSERT_TRUE(reading.Send("GET /fa"));
  ASSERT_NE(WaitForReply(), nullptr);
  server_.reset();
  auto responses = testing::ParseResponses(holding.ReadToClose());
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].status, 503);
  idle.ReadToClose();
  EXPECT_TRUE(idle.closed());
}

}  // namespace
}  // namespace iblip::server::http
