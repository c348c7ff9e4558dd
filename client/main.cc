// iblip-client: the command-line client of the iblip.v1 API.
//
//   iblip-client generate --server HOST:PORT --image FILE --prompt TEXT
//   [options] [--json] iblip-client info     --server HOST:PORT iblip-client
//   tokenize --server HOST:PORT --text TEXT iblip-client health   --server
//   HOST:PORT [--service NAME]
//
// Exit status: 0 success, 1 the server returned an error (code and message on
// stderr), 2 bad command line, 3 the server is unreachable.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/generation_result.h"
#include "client/request_builder.h"
#include "common/command_line.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "iblip/v1/iblip.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace iblip::client {

using ::iblip::CommandLine;
namespace {

constexpr int kExitRpcError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr char kDefaultServer[] = "localhost:50051";

constexpr char kUsage[] =
    R"(usage: iblip-client COMMAND --server HOST:PORT [flags]

commands:
  generate  --image FILE [--prompt TEXT] [--max-new-tokens N] [--min-new-tokens N]
            [--temperature X] [--top-k N] [--top-p X] [--repetition-penalty X]
            [--length-penalty X] [--num-beams N] [--num-return-sequences N]
            [--early-stopping true|false]
            [--stop TEXT]... [--seed N] [--priority low|normal|high]
            [--request-id ID] [--unary] [--json]
            Streams the answer to stdout. --json prints only one JSON object when
            the request ends: token_ids, text, finish_reason, usage.
  info      Prints the model's description (JSON).
  tokenize  --text TEXT   Prints LM and Q-Former token ids (JSON).
  health    [--service NAME]   Prints SERVING / NOT_SERVING (exit 1 unless SERVING).

common flags: --server HOST:PORT (default localhost:50051), --timeout SECONDS
)";

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index <= 16 ? kNames[index] : "UNKNOWN";
}

int UsageError(const std::string& message) {
  std::cerr << "iblip-client: " << message << "\n\n" << kUsage;
  return kExitUsage;
}

int RpcError(const grpc::Status& status, const std::string& server) {
  std::cerr << "iblip-client: " << CodeName(status.error_code()) << ": "
            << status.error_message() << "\n";
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::cerr << "iblip-client: is the server running at " << server << "?\n";
    return kExitUnreachable;
  }
  return kExitRpcError;
}

void SetDeadline(const CommandLine& line, grpc::ClientContext& context,
                 double timeout_s) {
  if (line.Has("timeout")) {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::microseconds(static_cast<long long>(timeout_s * 1e6)));
  }
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

int Generate(const CommandLine& line,
             const std::shared_ptr<grpc::Channel>& channel,
             const std::string& server, double timeout_s) {
  auto request = BuildGenerateRequest(line);
  if (!request.ok()) return UsageError(std::string(request.status().message()));
  const bool json = line.Has("json");
  auto stub = v1::InstructBlipService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(line, context, timeout_s);

  GenerationResult result;
  grpc::Status status;
  if (line.Has("unary")) {
    v1::GenerateUnaryResponse response;
    status = stub->GenerateUnary(&context, *request, &response);
    result = GenerationResult::FromUnary(response);
    if (status.ok() && !json && result.sequences().count(0)) {
      std::cout << result.sequences().at(0).text;
    }
  } else {
    auto reader = stub->Generate(&context, *request);
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
      result.Add(message);
      if (!json && message.index() == 0 && !message.text().empty()) {
        std::cout << message.text() << std::flush;
      }
    }
    status = reader->Finish();
  }
  if (!status.ok()) {
    if (!json) std::cout << "\n";
    return RpcError(status, server);
  }
  if (json) {
    std::cout << result.ToJson() << "\n";
    return 0;
  }
  std::cout << "\n";
  for (const auto& [index, sequence] : result.sequences()) {
    if (index == 0) continue;
    std::cout << "[sequence " << index << "] " << sequence.text << "\n";
  }
  const v1::Usage& usage = result.usage();
  const double decode_s =
      (usage.total_time_us() - usage.time_to_first_token_us()) / 1e6;
  const double tok_per_s = usage.generated_tokens() > 1 && decode_s > 0
                               ? (usage.generated_tokens() - 1) / decode_s
                               : 0;
  const std::string reason =
      result.sequences().count(0)
          ? FinishReasonName(result.sequences().at(0).finish_reason)
          : "";
  std::fprintf(stderr,
               "[%u tokens, %s, time to first token %.0f ms, %.1f tok/s]\n",
               usage.generated_tokens(), reason.c_str(),
               usage.time_to_first_token_us() / 1e3, tok_per_s);
  return 0;
}

int Info(const CommandLine& line, const std::shared_ptr<grpc::Channel>& channel,
         const std::string& server, double timeout_s) {
  auto stub = v1::InstructBlipService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(line, context, timeout_s);
  v1::ModelInfo info;
  grpc::Status status =
      stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) return RpcError(status, server);
  std::cout << ToJson(info) << "\n";
  return 0;
}

int Tokenize(const CommandLine& line,
             const std::shared_ptr<grpc::Channel>& channel,
             const std::string& server, double timeout_s) {
  auto text = line.Get("text");
  if (!text) return UsageError("tokenize needs --text TEXT");
  auto stub = v1::InstructBlipService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(line, context, timeout_s);
  v1::TokenizeRequest request;
  request.set_text(*text);
  v1::TokenizeResponse response;
  grpc::Status status = stub->Tokenize(&context, request, &response);
  if (!status.ok()) return RpcError(status, server);
  std::cout << ToJson(response) << "\n";
  return 0;
}

int Health(const CommandLine& line,
           const std::shared_ptr<grpc::Channel>& channel,
           const std::string& server, double timeout_s) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(line, context, timeout_s);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(line.Get("service").value_or(""));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return RpcError(status, server);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                   response.status())
            << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING
             ? 0
             : kExitRpcError;
}

int Main(int argc, char** argv) {
  auto parsed = CommandLine::Parse(argc, argv, {"json", "unary", "help"});
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  const CommandLine& line = *parsed;
  if (line.Has("help") || line.command().empty()) {
    std::cout << kUsage;
    return line.Has("help") ? 0 : kExitUsage;
  }

  if (!line.positional().empty()) {
    return UsageError(
        absl::StrCat("unexpected argument '", line.positional()[0], "'"));
  }
  std::set<std::string> known = {"server", "timeout", "help"};
  if (line.command() == "generate") {
    for (const char* const* f = kGenerateFlags; *f != nullptr; ++f)
      known.insert(*f);
    known.insert({"json", "unary"});
  } else if (line.command() == "tokenize") {
    known.insert("text");
  } else if (line.command() == "health") {
    known.insert("service");
  } else if (line.command() != "info") {
    return UsageError(absl::StrCat("unknown command '", line.command(), "'"));
  }
  if (auto unknown = line.Unknown(known); !unknown.empty()) {
    return UsageError(absl::StrCat("unknown flag --",
                                   absl::StrJoin(unknown, ", --"), " for ",
                                   line.command()));
  }
  auto timeout = line.GetDouble("timeout");
  if (!timeout.ok()) return UsageError(std::string(timeout.status().message()));
  const double timeout_s = timeout->value_or(0);

  const std::string server = line.Get("server").value_or(kDefaultServer);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(
      server, grpc::InsecureChannelCredentials(), args);

  if (line.command() == "generate")
    return Generate(line, channel, server, timeout_s);
  if (line.command() == "info") return Info(line, channel, server, timeout_s);
  if (line.command() == "tokenize")
    return Tokenize(line, channel, server, timeout_s);
  return Health(line, channel, server, timeout_s);
}

}  // namespace
}  // namespace iblip::client

int main(int argc, char** argv) { return iblip::client::Main(argc, argv); }
