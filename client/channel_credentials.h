#pragma once

#include <grpcpp/security/credentials.h>

#include <memory>

#include "absl/status/statusor.h"
#include "common/command_line.h"

namespace iblip::client {

// Channel credentials from the clients' TLS flags: none of them means
// plaintext; --tls uses the system's roots; --tls-ca FILE trusts that CA;
// --tls-cert FILE with --tls-key FILE presents a client certificate (mutual
// TLS). INVALID_ARGUMENT names the flag whose file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
ChannelCredentialsFromFlags(const CommandLine& line);

}  // namespace iblip::client
