#include "server/grpc/wire_request.h"

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "server/pipeline/request_validator.h"

namespace iblip::server {
namespace {

using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// Field numbers of the string fields in iblip.v1.GenerateRequest (and its
// GenerationParameters), the only ones protobuf checks for UTF-8.
constexpr int kPromptField = v1::GenerateRequest::kPromptFieldNumber;
constexpr int kRequestIdField = v1::GenerateRequest::kRequestIdFieldNumber;
constexpr int kParametersField = v1::GenerateRequest::kParametersFieldNumber;
constexpr int kStopSequencesField =
    v1::GenerationParameters::kStopSequencesFieldNumber;
constexpr int kTextField = v1::TokenizeRequest::kTextFieldNumber;
constexpr int kImagesField = v1::GenerateRequest::kImagesFieldNumber;
constexpr int kSha256Field = v1::Image::kSha256FieldNumber;

bool IsBadString(const UnknownField& field) {
  return field.type() == UnknownField::TYPE_LENGTH_DELIMITED &&
         !IsValidUtf8(field.length_delimited());
}

absl::Status NotUtf8(absl::string_view path) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": is not valid UTF-8"));
}

absl::Status NotA(absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("request: is not a valid ", message,
                   " message (malformed protobuf encoding)"));
}

}  // namespace

absl::StatusOr<v1::GenerateRequest> ParseGenerateRequest(
    absl::string_view wire) {
  v1::GenerateRequest request;
  if (!request.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return DiagnoseMalformedRequest(wire);
  }
  return request;
}

absl::Status DiagnoseMalformedRequest(absl::string_view wire) {
  // Read as bare fields (no schema, so no UTF-8 check) and look for the
  // string that is not UTF-8.
  UnknownFieldSet fields;
  if (fields.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    int stop_index = 0;
    int image_index = 0;
    for (int i = 0; i < fields.field_count(); ++i) {
      const UnknownField& field = fields.field(i);
      if (field.number() == kImagesField &&
          field.type() == UnknownField::TYPE_LENGTH_DELIMITED) {
        UnknownFieldSet image;
        if (image.ParseFromString(field.length_delimited())) {
          for (int j = 0; j < image.field_count(); ++j) {
            if (image.field(j).number() == kSha256Field &&
                IsBadString(image.field(j))) {
              return NotUtf8(absl::StrCat("images[", image_index, "].sha256"));
            }
          }
        }
        ++image_index;
        continue;
      }
      if (field.number() == kPromptField && IsBadString(field)) {
        return NotUtf8("prompt");
      }
      if (field.number() == kRequestIdField && IsBadString(field)) {
        return NotUtf8("request_id");
      }
      if (field.number() != kParametersField ||
          field.type() != UnknownField::TYPE_LENGTH_DELIMITED) {
        continue;
      }
      UnknownFieldSet parameters;
      if (!parameters.ParseFromString(field.length_delimited())) continue;
      for (int j = 0; j < parameters.field_count(); ++j) {
        if (parameters.field(j).number() != kStopSequencesField) continue;
        if (IsBadString(parameters.field(j))) {
          return NotUtf8(
              absl::StrCat("parameters.stop_sequences[", stop_index, "]"));
        }
        ++stop_index;
      }
    }
  }
  return NotA("iblip.v1.GenerateRequest");
}

absl::Status DiagnoseMalformedTokenizeRequest(absl::string_view wire) {
  UnknownFieldSet fields;
  if (fields.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    for (int i = 0; i < fields.field_count(); ++i) {
      if (fields.field(i).number() == kTextField &&
          IsBadString(fields.field(i)))
        return NotUtf8("text");
    }
  }
  return NotA("iblip.v1.TokenizeRequest");
}

grpc::Status SerializeToWire(const google::protobuf::Message& message,
                             grpc::ByteBuffer* out) {
  out->Clear();  // the writer wants an empty buffer
  bool own_buffer = false;
  return grpc::GenericSerialize<grpc::ProtoBufferWriter,
                                google::protobuf::Message>(message, out,
                                                           &own_buffer);
}

}  // namespace iblip::server
