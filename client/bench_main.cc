// iblip-bench: load for an iblip-server, measured at the client.
//
//   iblip-bench --server HOST:PORT (--workload FILE.jsonl | --image FILE)
//               [--concurrency N | --rate R | --load-fraction F]
//               [--requests N] [--duration S] [--capacity-requests N]
//               [--min-tokens N] [--max-tokens N] [--seed N] [--json-out FILE]
//
// Closed loop (--concurrency N, the default 4): N streams, each sends its
// next request when the last one ends. Open loop (--rate R): requests
// arrive as a Poisson process at R per second (exponential gaps drawn from
// --seed), whatever the server's pace. --load-fraction F: first the
// capacity, the closed loop's requests/s at --concurrency over
// --capacity-requests requests, then the open loop at F x that rate over
// --requests more; both phases take consecutive workload lines, so a
// workload with one image per line sends every image once (cache misses).
// Stops after --requests (default: the workload's size, or 100) or
// --duration seconds (default 60), whichever comes first. Prints a table;
// --json-out writes the same report as JSON. Exit 0 unless the command line
// or the workload is bad (errors from the server are reported, not fatal).
//
// Latencies per request: time to first token, and inter-token latencies
// within each returned sequence (between arrivals of its token messages).

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/channel_credentials.h"
#include "client/load_report.h"
#include "client/workload.h"
#include "common/command_line.h"
#include "iblip/v1/iblip.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace iblip::client {
namespace {

using Clock = std::chrono::steady_clock;

// Connections to the server (see Target).
constexpr int kChannels = 8;

constexpr char kUsage[] =
    R"(usage: iblip-bench --server HOST:PORT (--workload FILE.jsonl | --image FILE) [flags]

  --workload FILE     JSON lines: {"image": PATH, "prompt": TEXT, "parameters": {...}}
  --image FILE        generated workload on this image (prompts cycle, exact
                      output lengths uniform in [--min-tokens, --max-tokens])
  --concurrency N     closed loop: N streams back to back (default 4)
  --rate R            open loop: Poisson arrivals, R requests/s
  --load-fraction F   capacity (closed loop at --concurrency), then the open
                      loop at F x capacity
  --capacity-requests N  requests of the capacity phase (default 2 x
                      --concurrency)
  --requests N        stop after N requests (default: workload size, or 100;
                      with --load-fraction: what is left of it, or 100)
  --duration S        stop sending after S seconds (default 60)
  --min-tokens N      generated workload (default 16)
  --max-tokens N      generated workload (default 64)
  --seed N            workload and arrival randomness (default 0)
  --json-out FILE     also write the report as JSON
  --no-progress       no progress bar on stderr
  TLS: --tls, --tls-ca FILE, --tls-cert FILE --tls-key FILE, --tls-server-name NAME
  --api-key KEY       (or IBLIP_API_KEY) when the server wants one
)";

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

RequestSample RunOne(v1::InstructBlipService::Stub& stub,
                     const v1::GenerateRequest& request,
                     const std::string& api_key) {
  grpc::ClientContext context;
  if (!api_key.empty())
    context.AddMetadata("authorization", "Bearer " + api_key);
  const Clock::time_point start = Clock::now();
  TokenTimeline timeline;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    timeline.Add(message.index(), message.token_ids_size(),
                 Seconds(Clock::now() - start));
  }
  const grpc::Status status = reader->Finish();
  RequestSample sample;
  timeline.Fill(sample);
  sample.e2e_s = Seconds(Clock::now() - start);
  if (!status.ok()) {
    // gRPC's codes are absl's, with the same names.
    sample.code = absl::StatusCodeToString(
        static_cast<absl::StatusCode>(status.error_code()));
  }
  return sample;
}

// Collects samples and draws the progress bar.
class Progress {
 public:
  Progress(int total, bool draw) : total_(total), draw_(draw) {}
  void Add(RequestSample sample) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sample.code != "OK") ++errors_;
    samples_.push_back(std::move(sample));
    if (!draw_) return;
    const int done = static_cast<int>(samples_.size());
    const int width = 30, filled = total_ > 0 ? width * done / total_ : 0;
    std::fprintf(stderr, "\r[%s%s] %d/%d requests, %d errors",
                 std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), done, total_,
                 errors_);
    std::fflush(stderr);
  }
  std::vector<RequestSample> Take() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draw_) std::fprintf(stderr, "\n");
    return std::move(samples_);
  }

 private:
  const int total_;
  const bool draw_;
  std::mutex mutex_;
  std::vector<RequestSample> samples_;
  int errors_ = 0;
};

int UsageError(const std::string& message) {
  std::cerr << "iblip-bench: " << message << "\n\n" << kUsage;
  return 2;
}

// Where requests go: several channels, each its own connection (a server
// caps the streams of one connection), taken round robin.
struct Target {
  std::vector<std::unique_ptr<v1::InstructBlipService::Stub>> stubs;
  std::string api_key;
  v1::InstructBlipService::Stub& For(int request) {
    return *stubs[request % stubs.size()];
  }
};

// One run of the load: workload lines first .. first+count-1 (wrapping
// around), closed loop at `concurrency` or, with rate > 0, open loop.
struct Phase {
  int first = 0;
  int count = 0;
  int concurrency = 1;
  double rate = 0;
  double duration_s = 60;
  uint64_t seed = 0;
};

LoadReport Run(Target& target,
               const std::vector<v1::GenerateRequest>& workload,
               const Phase& phase, bool draw_progress) {
  Progress progress(phase.count, draw_progress);
  std::atomic<int> next{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop_sending =
      start + std::chrono::microseconds(int64_t(phase.duration_s * 1e6));
  // The index of the next request to send, or -1 when done.
  auto take = [&]() -> int {
    if (Clock::now() >= stop_sending) return -1;
    const int i = next.fetch_add(1);
    return i < phase.count ? phase.first + i : -1;
  };
  auto send = [&](int i) {
    progress.Add(
        RunOne(target.For(i), workload[i % workload.size()], target.api_key));
  };
  std::vector<std::thread> threads;
  if (phase.rate > 0) {
    std::mt19937_64 rng(phase.seed + 1);
    std::exponential_distribution<double> gap(phase.rate);
    Clock::time_point arrival = start;
    for (int i = take(); i >= 0; i = take()) {
      std::this_thread::sleep_until(arrival);
      threads.emplace_back(send, i);
      arrival += std::chrono::microseconds(int64_t(gap(rng) * 1e6));
    }
  } else {
    for (int c = 0; c < phase.concurrency; ++c) {
      threads.emplace_back([&] {
        for (int i = take(); i >= 0; i = take()) send(i);
      });
    }
  }
  for (auto& thread : threads) thread.join();
  return LoadReport(progress.Take(), Seconds(Clock::now() - start));
}

int Main(int argc, char** argv) {
  auto parsed = CommandLine::Parse(argc, argv, {"help", "tls", "no-progress"});
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  const CommandLine& line = *parsed;
  if (line.Has("help")) return std::cout << kUsage, 0;
  if (!line.command().empty())
    return UsageError("unexpected argument '" + line.command() + "'");
  if (auto unknown = line.Unknown(
          {"help", "server", "workload", "image", "concurrency", "rate",
           "load-fraction", "capacity-requests", "requests", "duration",
           "min-tokens", "max-tokens", "seed", "json-out", "no-progress", "tls",
           "tls-ca", "tls-cert", "tls-key", "tls-server-name", "api-key"});
      !unknown.empty()) {
    return UsageError("unknown flag --" + absl::StrJoin(unknown, ", --"));
  }
  auto number = [&](const char* flag,
                    double fallback) -> absl::StatusOr<double> {
    auto value = line.GetDouble(flag);
    if (!value.ok()) return value.status();
    if (value->has_value() && **value < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, " must be >= 0"));
    return value->value_or(fallback);
  };
  auto concurrency = number("concurrency", 4), rate = number("rate", 0),
       fraction = number("load-fraction", 0), duration = number("duration", 60),
       min_tokens = number("min-tokens", 16),
       max_tokens = number("max-tokens", 64), seed = number("seed", 0),
       requested = number("requests", 0);
  auto capacity_requests =
      number("capacity-requests", 2 * concurrency.value_or(4));
  for (const auto* value :
       {&concurrency, &rate, &fraction, &duration, &min_tokens, &max_tokens,
        &seed, &requested, &capacity_requests}) {
    if (!value->ok()) return UsageError(std::string(value->status().message()));
  }
  if (line.Has("rate") + line.Has("load-fraction") > 1 ||
      (line.Has("concurrency") && line.Has("rate")))
    return UsageError(
        "--concurrency (closed loop) and --rate (open loop) exclude each "
        "other, and --load-fraction sets the rate itself");
  if (line.Has("load-fraction") && *fraction <= 0)
    return UsageError("--load-fraction must be > 0");
  if (*concurrency < 1) return UsageError("--concurrency must be >= 1");
  if (*capacity_requests < 1)
    return UsageError("--capacity-requests must be >= 1");
  if (*min_tokens < 1 || *max_tokens < *min_tokens)
    return UsageError("need 1 <= --min-tokens <= --max-tokens");
  const bool find_capacity = *fraction > 0;
  const int warmup = find_capacity ? int(*capacity_requests) : 0;

  std::vector<v1::GenerateRequest> workload;
  if (auto path = line.Get("workload")) {
    auto loaded = LoadWorkload(*path);
    if (!loaded.ok()) return UsageError(std::string(loaded.status().message()));
    workload = std::move(*loaded);
  } else if (auto image = line.Get("image")) {
    std::ifstream in(*image, std::ios::binary);
    if (!in) return UsageError("--image: cannot read '" + *image + "'");
    std::stringstream bytes;
    bytes << in.rdbuf();
    workload = GeneratedWorkload(
        bytes.str(), warmup + (*requested > 0 ? int(*requested) : 100),
        int(*min_tokens), int(*max_tokens), uint64_t(*seed));
  } else {
    return UsageError("give --workload FILE or --image FILE");
  }
  const int total = *requested > 0 ? int(*requested)
                    : int(workload.size()) > warmup
                        ? int(workload.size()) - warmup
                        : 100;
  if (line.Has("workload") && warmup + total > int(workload.size())) {
    std::cerr << "iblip-bench: note: " << warmup + total
              << " requests from a workload of " << workload.size()
              << " lines: some are sent again (their images may hit the "
                 "server's caches)\n";
  }

  auto credentials = ChannelCredentialsFromFlags(line);
  if (!credentials.ok())
    return UsageError(std::string(credentials.status().message()));
  Target target;
  for (int c = 0; c < kChannels; ++c) {
    grpc::ChannelArguments args;
    if (auto name = line.Get("tls-server-name"))
      args.SetSslTargetNameOverride(*name);
    // Without a pool of its own each channel would share one connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    target.stubs.push_back(
        v1::InstructBlipService::NewStub(grpc::CreateCustomChannel(
            line.Get("server").value_or("localhost:50051"), *credentials,
            args)));
  }
  target.api_key = line.Get("api-key").value_or("");
  if (target.api_key.empty() && std::getenv("IBLIP_API_KEY"))
    target.api_key = std::getenv("IBLIP_API_KEY");

  const bool draw = !line.Has("no-progress") && isatty(fileno(stderr));
  Phase phase{0, total, int(*concurrency), *rate, *duration, uint64_t(*seed)};
  nlohmann::json capacity;
  std::string heading =
      *rate > 0 ? absl::StrCat("open loop, ", *rate, " req/s\n")
                : absl::StrCat("closed loop, ", phase.concurrency, " streams\n");
  if (find_capacity) {
    const LoadReport closed = Run(
        target, workload, Phase{0, warmup, phase.concurrency, 0, *duration},
        draw);
    std::cout << "capacity: closed loop, " << phase.concurrency
              << " streams\n"
              << closed.Table();
    if (closed.requests_per_s() <= 0) {
      std::cerr << "iblip-bench: no request succeeded in the capacity "
                   "phase\n";
      return 1;
    }
    capacity = nlohmann::json::parse(closed.Json());
    capacity["concurrency"] = phase.concurrency;
    phase.first = warmup;
    phase.rate = *fraction * closed.requests_per_s();
    heading = absl::StrFormat("open loop, %.3f req/s (%.2f x capacity)\n",
                              phase.rate, *fraction);
  }
  const LoadReport report = Run(target, workload, phase, draw);
  std::cout << heading << report.Table();
  if (auto path = line.Get("json-out")) {
    nlohmann::json json = nlohmann::json::parse(report.Json());
    json["mode"] = phase.rate > 0 ? "open" : "closed";
    if (phase.rate > 0) {
      json["rate_per_s"] = phase.rate;
    } else {
      json["concurrency"] = phase.concurrency;
    }
    if (find_capacity) {
      json["capacity"] = capacity;
      json["load_fraction"] = *fraction;
    }
    std::ofstream out(*path);
    out << json.dump() << "\n";
    if (!out) return UsageError("--json-out: cannot write '" + *path + "'");
  }
  return 0;
}

}  // namespace
}  // namespace iblip::client

int main(int argc, char** argv) { return iblip::client::Main(argc, argv); }
