// iblip-server --model PACKAGE_DIR [--config FILE] [--port N] [--metrics-port
// N]
//              [--host ADDRESS] [--threads N]
//
// Flags override the config file. Prints one line to stdout once it is
// ready ("iblip-server ready grpc=HOST:PORT metrics=HOST:PORT"); logs go to
// stderr. SIGTERM/SIGINT drain gracefully, then exit 0. Exit 1 when the
// server cannot start, 2 on a bad command line.

#include <csignal>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_join.h"
#include "common/command_line.h"
#include "config/config_loader.h"
#include "server/server.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

constexpr char kUsage[] = R"(usage: iblip-server --model PACKAGE_DIR [flags]

  --model DIR         model package (made by model/export); required
  --config FILE       server config (text-format iblip.config.ServerConfig,
                      see config/server.pbtxt); flags below override it
  --host ADDRESS      address to bind (default 0.0.0.0)
  --port N            gRPC port, 0 = any free port (default 50051)
  --metrics-port N    Prometheus /metrics port, 0 = any free port (default 9090)
  --threads N         torch intra-op threads, 0 = all CPUs (default 0)
)";

int UsageError(const std::string& message) {
  std::cerr << "iblip-server: " << message << "\n\n" << kUsage;
  return 2;
}

int StartupError(const std::string& message) {
  spdlog::error("{}", message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = iblip::CommandLine::Parse(argc, argv, {"help"});
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  const iblip::CommandLine& line = *parsed;
  if (line.Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!line.command().empty())
    return UsageError("unexpected argument '" + line.command() + "'");
  if (auto unknown = line.Unknown({"model", "config", "host", "port",
                                   "metrics-port", "threads", "help"});
      !unknown.empty()) {
    return UsageError("unknown flag --" + absl::StrJoin(unknown, ", --"));
  }
  const std::string model_dir = line.Get("model").value_or("");
  if (model_dir.empty()) return UsageError("--model PACKAGE_DIR is required");

  spdlog::set_default_logger(spdlog::stderr_color_mt("iblip"));
  // Block the shutdown signals in every thread; main waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  iblip::config::ServerConfig config;
  if (auto path = line.Get("config")) {
    auto loaded = iblip::config::LoadServerConfig(*path);
    if (!loaded.ok())
      return StartupError(std::string(loaded.status().message()));
    config = std::move(*loaded);
  }
  if (auto host = line.Get("host")) config.set_host(*host);
  for (const char* flag : {"port", "metrics-port", "threads"}) {
    auto value = line.GetInt(flag);
    if (!value.ok()) return UsageError(std::string(value.status().message()));
    if (!value->has_value()) continue;
    if (**value < 0)
      return UsageError(std::string("--") + flag + " must be >= 0");
    const auto v = static_cast<uint32_t>(**value);
    if (std::string(flag) == "port") config.set_port(v);
    if (std::string(flag) == "metrics-port") config.set_metrics_port(v);
    if (std::string(flag) == "threads")
      config.mutable_runtime()->set_num_threads(v);
  }
  auto resolved = iblip::config::WithDefaults(std::move(config));
  if (!resolved.ok())
    return StartupError(std::string(resolved.status().message()));

  spdlog::info("loading model package {}", model_dir);
  auto server = iblip::server::Server::Create({model_dir, *resolved});
  if (!server.ok()) return StartupError(server.status().ToString());

  const std::string host = (*server)->host();
  std::printf("iblip-server ready grpc=%s:%d metrics=%s:%d\n", host.c_str(),
              (*server)->port(), host.c_str(), (*server)->metrics_port());
  std::fflush(stdout);
  spdlog::info("serving on {}:{} (metrics on port {})", host, (*server)->port(),
               (*server)->metrics_port());

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received signal {}: draining (up to {} s)", signal_number,
               resolved->drain_timeout_s());
  (*server)->Drain(absl::Seconds(resolved->drain_timeout_s()));
  server->reset();
  spdlog::info("stopped");
  return 0;
}
