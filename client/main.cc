// iblip-client: the command-line client of the iblip.v1 API.
//
//   iblip-client generate --server HOST:PORT --image FILE --prompt TEXT [...]
//   iblip-client chat     --server HOST:PORT --image FILE [...]  (stdin turns)
//   iblip-client info     --server HOST:PORT
//   iblip-client tokenize --server HOST:PORT --text TEXT
//   iblip-client health   --server HOST:PORT [--service NAME]
//
// Exit status: 0 success, 1 the server returned an error (code and message on
// stderr), 2 bad command line, 3 the server is unreachable.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/channel_credentials.h"
#include "client/generation_result.h"
#include "client/request_builder.h"
#include "common/command_line.h"
#include "common/sha256.h"
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
  chat      --image FILE [generate's flags]
            Interactive questions about one image: one line of stdin per turn
            (empty line or /quit ends). Each turn is a new request on the same
            image (the server's cache makes later turns fast); after each answer,
            stderr shows the time to first token and tok/s.
  info      Prints the model's description (JSON).
  tokenize  --text TEXT   Prints LM and Q-Former token ids (JSON).
  health    [--service NAME]   Prints SERVING / NOT_SERVING (exit 1 unless SERVING).

common flags: --server HOST:PORT (default localhost:50051), --timeout SECONDS,
  TLS: --tls (system roots), --tls-ca FILE, --tls-cert FILE --tls-key FILE
  (mutual TLS), --tls-server-name NAME (override the name checked);
  --api-key KEY (or IBLIP_API_KEY in the environment) when the server wants one
)";

// gRPC's codes are absl's codes, with the same names ("INVALID_ARGUMENT").
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
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

// The call's deadline (--timeout) and API key (--api-key, or the
// IBLIP_API_KEY environment variable, so keys stay out of shell history).
void PrepareContext(const CommandLine& line, grpc::ClientContext& context,
                    double timeout_s) {
  if (line.Has("timeout")) {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::microseconds(static_cast<long long>(timeout_s * 1e6)));
  }
  std::string key = line.Get("api-key").value_or("");
  if (key.empty()) {
    if (const char* env = std::getenv("IBLIP_API_KEY")) key = env;
  }
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

// Runs one request, streaming sequence 0's text to stdout when `echo`.
grpc::Status RunRequest(v1::InstructBlipService::Stub& stub,
                        const CommandLine& line, double timeout_s,
                        const v1::GenerateRequest& request, bool unary,
                        bool echo, GenerationResult& result) {
  grpc::ClientContext context;
  PrepareContext(line, context, timeout_s);
  if (unary) {
    v1::GenerateUnaryResponse response;
    grpc::Status status = stub.GenerateUnary(&context, request, &response);
    result = GenerationResult::FromUnary(response);
    if (status.ok() && echo && result.sequences().count(0))
      std::cout << result.sequences().at(0).text;
    return status;
  }
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    result.Add(message);
    if (echo && message.index() == 0 && !message.text().empty())
      std::cout << message.text() << std::flush;
  }
  return reader->Finish();
}

// "[12 tokens, stop, time to first token 35 ms, 80.2 tok/s]" on stderr.
void PrintTurnStats(const GenerationResult& result) {
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
}

int Generate(const CommandLine& line,
             const std::shared_ptr<grpc::Channel>& channel,
             const std::string& server, double timeout_s) {
  auto request = BuildGenerateRequest(line);
  if (!request.ok()) return UsageError(std::string(request.status().message()));
  const bool json = line.Has("json");
  auto stub = v1::InstructBlipService::NewStub(channel);
  GenerationResult result;
  grpc::Status status = RunRequest(*stub, line, timeout_s, *request,
                                   line.Has("unary"), !json, result);
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
  PrintTurnStats(result);
  return 0;
}

int Chat(const CommandLine& line, const std::shared_ptr<grpc::Channel>& channel,
         const std::string& server, double timeout_s) {
  if (line.Has("prompt"))
    return UsageError("chat reads its prompts from stdin, not --prompt");
  auto request = BuildGenerateRequest(line);
  if (!request.ok()) return UsageError(std::string(request.status().message()));
  auto stub = v1::InstructBlipService::NewStub(channel);
  // The image crosses the network once: the first turn sends the bytes,
  // later ones its SHA-256 (Image.sha256).
  const std::string image_bytes = request->images(0).data();
  const bool interactive = isatty(fileno(stdin));
  std::string question;
  for (int turn = 1;; ++turn) {
    if (interactive) std::cout << "you> " << std::flush;
    if (!std::getline(std::cin, question) || question.empty() ||
        question == "/quit") {
      return 0;
    }
    request->set_prompt(question);
    if (!line.Has("request-id")) request->clear_request_id();
    std::cout << "model> " << std::flush;
    GenerationResult result;
    grpc::Status status = RunRequest(*stub, line, timeout_s, *request,
                                     line.Has("unary"), true, result);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND &&
        request->images(0).has_sha256()) {
      // The server no longer holds the image: send its bytes again.
      request->mutable_images(0)->set_data(image_bytes);
      result = GenerationResult();
      status = RunRequest(*stub, line, timeout_s, *request, line.Has("unary"),
                          true, result);
    }
    if (status.ok() && request->images(0).has_data()) {
      // The server holds the image now: later turns name it by hash.
      request->mutable_images(0)->set_sha256(Sha256Hex(image_bytes));
    }
    std::cout << "\n";
    if (!status.ok()) {
      // A bad question ends only its turn; an unreachable server ends chat.
      const int code = RpcError(status, server);
      if (code == kExitUnreachable) return code;
      continue;
    }
    PrintTurnStats(result);
  }
}

int Info(const CommandLine& line, const std::shared_ptr<grpc::Channel>& channel,
         const std::string& server, double timeout_s) {
  auto stub = v1::InstructBlipService::NewStub(channel);
  grpc::ClientContext context;
  PrepareContext(line, context, timeout_s);
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
  PrepareContext(line, context, timeout_s);
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
  PrepareContext(line, context, timeout_s);
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
  auto parsed =
      CommandLine::Parse(argc, argv, {"json", "unary", "help", "tls"});
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
  known.insert(
      {"tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name", "api-key"});
  if (line.command() == "generate" || line.command() == "chat") {
    for (const char* const* f = kGenerateFlags; *f != nullptr; ++f)
      known.insert(*f);
    known.insert("unary");
    if (line.command() == "generate") known.insert("json");
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
  auto credentials = ChannelCredentialsFromFlags(line);
  if (!credentials.ok())
    return UsageError(std::string(credentials.status().message()));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (auto name = line.Get("tls-server-name"))
    args.SetSslTargetNameOverride(*name);
  auto channel = grpc::CreateCustomChannel(server, *credentials, args);

  if (line.command() == "generate")
    return Generate(line, channel, server, timeout_s);
  if (line.command() == "chat") return Chat(line, channel, server, timeout_s);
  if (line.command() == "info") return Info(line, channel, server, timeout_s);
  if (line.command() == "tokenize")
    return Tokenize(line, channel, server, timeout_s);
  return Health(line, channel, server, timeout_s);
}

}  // namespace
}  // namespace iblip::client

int main(int argc, char** argv) { return iblip::client::Main(argc, argv); }
