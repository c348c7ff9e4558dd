#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "server/api_key_auth.h"

namespace iblip::server {

// The call's API-key check: OK when `auth` is null (authentication off).
inline absl::Status CheckCallAuth(const ApiKeyAuth* auth,
                                  const grpc::CallbackServerContext& context) {
  if (auth == nullptr) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  return auth->Check(
      it == metadata.end()
          ? absl::string_view()
          : absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace iblip::server
