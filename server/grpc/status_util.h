#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace iblip::server {

// absl::Status -> grpc::Status with the same code; long messages are cut so
// a status never exceeds what proxies accept in a trailer.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace iblip::server
