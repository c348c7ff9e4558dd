#pragma once

// Reading requests off the wire ourselves (the service takes the
// Generate methods raw), so a message protobuf refuses gets a clear
// INVALID_ARGUMENT naming the field instead of gRPC's bare status. The
// common case: proto3 `string` fields must be UTF-8, and protobuf rejects
// the whole message when one is not.

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "iblip/v1/iblip.pb.h"

namespace iblip::server {

// Parses `wire`; INVALID_ARGUMENT (from DiagnoseMalformedRequest) if it is
// not a GenerateRequest.
absl::StatusOr<v1::GenerateRequest> ParseGenerateRequest(
    absl::string_view wire);

// Why `wire` does not parse as a GenerateRequest, as INVALID_ARGUMENT:
// "prompt: is not valid UTF-8", "parameters.stop_sequences[1]: ...",
// "request_id: ...", or "request: is not a valid ... message".
absl::Status DiagnoseMalformedRequest(absl::string_view wire);

// The same for Tokenize: "text: is not valid UTF-8", or "request: ...".
absl::Status DiagnoseMalformedTokenizeRequest(absl::string_view wire);

// `message` serialized into `out` (emptied first), for the raw methods'
// responses.
grpc::Status SerializeToWire(const google::protobuf::Message& message,
                             grpc::ByteBuffer* out);

}  // namespace iblip::server
