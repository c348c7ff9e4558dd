#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace iblip::server::http {

// The tls.* options (the gRPC port's): a certificate chain and its key, and
// optionally the CA that client certificates must chain to (mutual TLS).
struct TlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// A TLS 1.2+ server context from PEM files; errors name the option.
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> MakeTlsContext(
    const TlsFiles& files);

}  // namespace iblip::server::http
