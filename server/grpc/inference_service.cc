#include "server/grpc/inference_service.h"

#include <grpcpp/support/proto_buffer_reader.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "model/runtime/image_decoder.h"
#include "server/grpc/generate_reactors.h"
#include "server/grpc/grpc_auth.h"
#include "server/grpc/status_util.h"
#include "server/grpc/wire_request.h"

namespace iblip::server {
namespace {

absl::Time ToAbslTime(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max())
    return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

// The request's bytes, parsed in place when they are well-formed; copied
// out only for `diagnose` to explain why not.
template <typename Message>
absl::StatusOr<Message> ParseWire(const grpc::ByteBuffer& wire,
                                  absl::Status (*diagnose)(absl::string_view)) {
  Message message;
  grpc::ByteBuffer copy(wire);  // the reader consumes its buffer
  grpc::ProtoBufferReader reader(&copy);
  if (message.ParseFromZeroCopyStream(&reader)) return message;
  std::vector<grpc::Slice> slices;
  if (!wire.Dump(&slices).ok()) return diagnose("");
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return diagnose(bytes);
}

}  // namespace

template <typename Reactor, typename... ReactorArgs>
Reactor* InferenceService::StartGeneration(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer& wire,
                                           ReactorArgs... reactor_args) {
  // Who is calling before what they sent: no parsing for unauthenticated
  // callers.
  absl::Status auth = CheckCallAuth(auth_, *context);
  absl::StatusOr<v1::GenerateRequest> request =
      auth.ok() ? ParseWire<v1::GenerateRequest>(wire, DiagnoseMalformedRequest)
                : absl::StatusOr<v1::GenerateRequest>(std::move(auth));
  std::string id = !request.ok() || request->request_id().empty()
                       ? pipeline_.NewRequestId()
                       : request->request_id();
  auto* reactor = new Reactor(id, reactor_args...);
  if (const absl::Status admitted = request.status(); !admitted.ok()) {
    pipeline_.deps().metrics->RequestFinished(admitted.code());
    reactor->OnComplete(admitted, UsageStats{});
    return reactor;
  }
  auto sink = std::make_shared<DetachableSink>(reactor);
  pipeline_.Start(*request, id, ToAbslTime(context->deadline()), sink,
                  [&](const std::shared_ptr<GenerationRequest>& generation) {
                    reactor->Attach(generation, sink);
                  });
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return StartGeneration<StreamGenerateReactor>(context, *request);
}

grpc::ServerUnaryReactor* InferenceService::GenerateUnary(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return StartGeneration<UnaryGenerateReactor>(context, *request, response);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest*,
    v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  *response = pipeline_.deps().model_info;
  for (const std::string& format : model::AcceptedImageFormats())
    response->add_accepted_image_formats(format);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* wire,
    grpc::ByteBuffer* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status auth = CheckCallAuth(auth_, *context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  auto request =
      ParseWire<v1::TokenizeRequest>(*wire, DiagnoseMalformedTokenizeRequest);
  if (!request.ok()) {
    reactor->Finish(ToGrpcStatus(request.status()));
    return reactor;
  }
  if (request->text().size() > pipeline_.deps().limits.max_prompt_bytes) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
        "text: must be at most ", pipeline_.deps().limits.max_prompt_bytes,
        " bytes, got ", request->text().size()))));
    return reactor;
  }
  pipeline_.deps().preprocess_pool->Post(
      [this, reactor, text = std::move(*request->mutable_text()), response] {
        v1::TokenizeResponse result;
        for (int32_t id : pipeline_.deps().lm_tokenizer->EncodePrompt(text)) {
          result.add_input_ids(id);
          result.add_tokens(pipeline_.deps().lm_tokenizer->TokenString(id));
        }
        for (int32_t id : pipeline_.deps().qformer_tokenizer->Encode(text)) {
          result.add_qformer_input_ids(id);
          result.add_qformer_tokens(
              pipeline_.deps().qformer_tokenizer->TokenString(id));
        }
        reactor->Finish(SerializeToWire(result, response));
      });
  return reactor;
}

}  // namespace iblip::server
