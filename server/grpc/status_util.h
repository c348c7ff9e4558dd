#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace iblip::server {

// absl::Status -> grpc::Status with the same code; long messages are cut so
// a status never exceeds what proxies accept in a trailer.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The lower-case name used in metrics labels ("ok", "invalid_argument", ...).
std::string StatusLabel(absl::StatusCode code);

}  // namespace iblip::server
