// iblip-server --model PACKAGE_DIR [--config FILE.yaml] [--OPTION VALUE]...
//
// Every configuration option is also a flag (--help lists them); flags
// override the config file. Prints one line to stdout once it is ready
// ("iblip-server ready grpc=HOST:PORT metrics=HOST:PORT"); logs go to
// stderr. SIGTERM/SIGINT drain gracefully, then exit 0; a second one during
// the drain exits at once (status 1). Exit 1 when the server cannot start,
// 2 on a bad command line.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/command_line.h"
#include "config/config_loader.h"
#include "config/config_options.h"
#include "server/heap_policy.h"
#include "server/logging.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

namespace {

using iblip::config::AllConfigOptions;
using iblip::config::ConfigOption;

// --threads predates the generated flags; kept as an alias.
constexpr char kThreadsAlias[] = "threads";

std::string Usage() {
  std::string usage =
      R"(usage: iblip-server --model PACKAGE_DIR [--config FILE.yaml] [options]

  --model DIR     model package (made by model/export); required
  --config FILE   YAML server config (config/server.yaml documents every
                  option); the flags below override it
  --threads N     alias of --runtime.num-threads

options (default in brackets):
)";
  for (const ConfigOption& option : AllConfigOptions()) {
    usage += absl::StrFormat(
        "  --%-34s %s [%s]\n", option.flag + " " + option.type, option.doc,
        option.default_value.empty() ? "depends on the model"
                                     : option.default_value);
  }
  return usage;
}

int UsageError(const std::string& message) {
  std::cerr << "iblip-server: " << message
            << "\n(iblip-server --help lists the flags)\n";
  return 2;
}

int StartupError(const std::string& message) {
  spdlog::error("{}", message);
  return 1;
}

// The config file, then the flags over it, then the defaults.
absl::StatusOr<iblip::config::ServerConfig> ResolveConfig(
    const iblip::CommandLine& line) {
  iblip::config::ServerConfig config;
  if (auto path = line.Get("config")) {
    auto loaded = iblip::config::LoadServerConfig(*path);
    if (!loaded.ok()) return loaded.status();
    config = std::move(*loaded);
  }
  if (auto threads = line.Get(kThreadsAlias)) {
    absl::Status status = iblip::config::SetOption(
        config, *iblip::config::FindOptionByPath("runtime.num_threads"),
        *threads, "--threads");
    if (!status.ok()) return status;
  }
  for (const ConfigOption& option : AllConfigOptions()) {
    if (auto value = line.Get(option.flag)) {
      absl::Status status =
          iblip::config::SetOption(config, option, *value, "--" + option.flag);
      if (!status.ok()) return status;
    }
  }
  return iblip::config::WithDefaults(std::move(config));
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = iblip::CommandLine::Parse(argc, argv, {"help"});
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  const iblip::CommandLine& line = *parsed;
  if (line.Has("help")) {
    std::cout << Usage();
    return 0;
  }
  if (!line.command().empty())
    return UsageError("unexpected argument '" + line.command() + "'");
  std::set<std::string> known = {"model", "config", "help", kThreadsAlias};
  for (const ConfigOption& option : AllConfigOptions())
    known.insert(option.flag);
  if (auto unknown = line.Unknown(known); !unknown.empty())
    return UsageError("unknown flag --" + absl::StrJoin(unknown, ", --"));
  const std::string model_dir = line.Get("model").value_or("");
  if (model_dir.empty()) return UsageError("--model PACKAGE_DIR is required");

  // Block the shutdown signals in every thread; main waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto resolved = ResolveConfig(line);
  if (!resolved.ok())
    return UsageError(std::string(resolved.status().message()));
  if (absl::Status logging = iblip::server::ConfigureLogging(
          resolved->logging().level(), resolved->logging().format());
      !logging.ok()) {
    return UsageError(std::string(logging.message()));
  }
  for (const ConfigOption& option : AllConfigOptions()) {
    spdlog::debug("config {} = {}", option.path,
                  iblip::config::OptionValue(*resolved, option));
  }

  if (absl::Status heap = iblip::server::RetainFreedHeapMemory(
          resolved->runtime().heap_retain_mib());
      !heap.ok()) {
    return StartupError(heap.ToString());
  }

  spdlog::info("loading model package {}", model_dir);
  auto server = iblip::server::Server::Create({model_dir, *resolved});
  if (!server.ok()) return StartupError(server.status().ToString());

  const std::string host = (*server)->host();
  std::printf("iblip-server ready grpc=%s:%d metrics=%s:%d http=%s:%d\n",
              host.c_str(), (*server)->port(), host.c_str(),
              (*server)->metrics_port(), host.c_str(), (*server)->http_port());
  std::fflush(stdout);
  spdlog::info("serving on {}:{} (metrics on port {})", host, (*server)->port(),
               (*server)->metrics_port());

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info(
      "received signal {}: draining (up to {} s); a second signal "
      "exits at once",
      signal_number, resolved->drain_timeout_s());
  // An operator who asks twice means now (the signals stay blocked, so only
  // this thread sees them).
  std::thread([signals] {
    int again = 0;
    sigwait(&signals, &again);
    spdlog::warn("received signal {} again: exiting without draining", again);
    spdlog::default_logger()->flush();
    std::_Exit(1);
  }).detach();
  (*server)->Drain(absl::Seconds(resolved->drain_timeout_s()));
  server->reset();
  spdlog::info("stopped");
  return 0;
}
