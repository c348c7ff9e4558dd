// iblip-bench: load for an iblip-server, measured at the client.
//
//   iblip-bench --server HOST:PORT (--workload FILE.jsonl | --image FILE)
//               [--concurrency N | --rate R] [--requests N] [--duration S]
//               [--min-tokens N] [--max-tokens N] [--seed N] [--json-out FILE]
//
// Closed loop (--concurrency N, the default 4): N streams, each sends its
// next request when the last one ends. Open loop (--rate R): requests
// arrive as a Poisson process at R per second, whatever the server's pace.
// Stops after --requests (default: the workload's size, or 100) or
// --duration seconds (default 60), whichever comes first. Prints a table;
// --json-out writes the same report as JSON. Exit 0 unless the command line
// or the workload is bad (errors from the server are reported, not fatal).

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
#include "absl/strings/str_join.h"
#include "client/channel_credentials.h"
#include "client/load_report.h"
#include "client/workload.h"
#include "common/command_line.h"
#include "iblip/v1/iblip.grpc.pb.h"

namespace iblip::client {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    R"(usage: iblip-bench --server HOST:PORT (--workload FILE.jsonl | --image FILE) [flags]

  --workload FILE     JSON lines: {"image": PATH, "prompt": TEXT, "parameters": {...}}
  --image FILE        generated workload on this image (prompts cycle, exact
                      output lengths uniform in [--min-tokens, --max-tokens])
  --concurrency N     closed loop: N streams back to back (default 4)
  --rate R            open loop: Poisson arrivals, R requests/s
  --requests N        stop after N requests (default: workload size, or 100)
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
  RequestSample sample;
  grpc::ClientContext context;
  if (!api_key.empty())
    context.AddMetadata("authorization", "Bearer " + api_key);
  const Clock::time_point start = Clock::now();
  Clock::time_point last;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    if (message.index() != 0 || message.token_ids_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (sample.output_tokens == 0) {
      sample.ttft_s = Seconds(now - start);
    } else {
      // A message may carry several tokens: spread the gap over them.
      const double gap = Seconds(now - last) / message.token_ids_size();
      for (int i = 0; i < message.token_ids_size(); ++i)
        sample.inter_token_s.push_back(gap);
    }
    last = now;
    sample.output_tokens += message.token_ids_size();
  }
  const grpc::Status status = reader->Finish();
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

int Main(int argc, char** argv) {
  auto parsed = CommandLine::Parse(argc, argv, {"help", "tls", "no-progress"});
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  const CommandLine& line = *parsed;
  if (line.Has("help")) return std::cout << kUsage, 0;
  if (!line.command().empty())
    return UsageError("unexpected argument '" + line.command() + "'");
  if (auto unknown = line.Unknown(
          {"help", "server", "workload", "image", "concurrency", "rate",
           "requests", "duration", "min-tokens", "max-tokens", "seed",
           "json-out", "no-progress", "tls", "tls-ca", "tls-cert", "tls-key",
           "tls-server-name", "api-key"});
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
       duration = number("duration", 60), min_tokens = number("min-tokens", 16),
       max_tokens = number("max-tokens", 64), seed = number("seed", 0),
       requested = number("requests", 0);
  for (const auto* value : {&concurrency, &rate, &duration, &min_tokens,
                            &max_tokens, &seed, &requested}) {
    if (!value->ok()) return UsageError(std::string(value->status().message()));
  }
  if (line.Has("concurrency") && line.Has("rate"))
    return UsageError(
        "--concurrency (closed loop) and --rate (open loop) exclude each "
        "other");
  if (*concurrency < 1) return UsageError("--concurrency must be >= 1");
  if (*min_tokens < 1 || *max_tokens < *min_tokens)
    return UsageError("need 1 <= --min-tokens <= --max-tokens");

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
    workload =
        GeneratedWorkload(bytes.str(), *requested > 0 ? int(*requested) : 100,
                          int(*min_tokens), int(*max_tokens), uint64_t(*seed));
  } else {
    return UsageError("give --workload FILE or --image FILE");
  }
  const int total = *requested > 0 ? int(*requested) : int(workload.size());

  auto credentials = ChannelCredentialsFromFlags(line);
  if (!credentials.ok())
    return UsageError(std::string(credentials.status().message()));
  grpc::ChannelArguments args;
  if (auto name = line.Get("tls-server-name"))
    args.SetSslTargetNameOverride(*name);
  auto channel = grpc::CreateCustomChannel(
      line.Get("server").value_or("localhost:50051"), *credentials, args);
  auto stub = v1::InstructBlipService::NewStub(channel);
  std::string api_key = line.Get("api-key").value_or("");
  if (api_key.empty() && std::getenv("IBLIP_API_KEY"))
    api_key = std::getenv("IBLIP_API_KEY");

  Progress progress(total, !line.Has("no-progress") && isatty(fileno(stderr)));
  std::atomic<int> next{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop_sending =
      start + std::chrono::microseconds(int64_t(*duration * 1e6));
  // The index of the next request to send, or -1 when done.
  auto take = [&]() -> int {
    if (Clock::now() >= stop_sending) return -1;
    const int i = next.fetch_add(1);
    return i < total ? i : -1;
  };
  std::vector<std::thread> threads;
  if (*rate > 0) {
    std::mt19937_64 rng(uint64_t(*seed) + 1);
    std::exponential_distribution<double> gap(*rate);
    Clock::time_point arrival = start;
    for (int i = take(); i >= 0; i = take()) {
      std::this_thread::sleep_until(arrival);
      threads.emplace_back([&, i] {
        progress.Add(RunOne(*stub, workload[i % workload.size()], api_key));
      });
      arrival += std::chrono::microseconds(int64_t(gap(rng) * 1e6));
    }
  } else {
    for (int c = 0; c < int(*concurrency); ++c) {
      threads.emplace_back([&] {
        for (int i = take(); i >= 0; i = take())
          progress.Add(RunOne(*stub, workload[i % workload.size()], api_key));
      });
    }
  }
  for (auto& thread : threads) thread.join();
  const double wall_s = Seconds(Clock::now() - start);

  LoadReport report(progress.Take(), wall_s);
  std::cout << (*rate > 0 ? absl::StrCat("open loop, ", *rate, " req/s\n")
                          : absl::StrCat("closed loop, ", int(*concurrency),
                                         " streams\n"))
            << report.Table();
  if (auto path = line.Get("json-out")) {
    std::ofstream out(*path);
    out << report.Json() << "\n";
    if (!out) return UsageError("--json-out: cannot write '" + *path + "'");
  }
  return 0;
}

}  // namespace
}  // namespace iblip::client

int main(int argc, char** argv) { return iblip::client::Main(argc, argv); }
