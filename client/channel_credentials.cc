#include "client/channel_credentials.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace iblip::client {
namespace {

absl::StatusOr<std::string> ReadPem(const CommandLine& line,
                                    const std::string& flag) {
  auto path = line.Get(flag);
  if (!path) return std::string();
  std::ifstream in(*path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read '", *path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
ChannelCredentialsFromFlags(const CommandLine& line) {
  const bool tls = line.Has("tls") || line.Has("tls-ca") ||
                   line.Has("tls-cert") || line.Has("tls-key");
  if (!tls) return grpc::InsecureChannelCredentials();
  if (line.Has("tls-cert") != line.Has("tls-key")) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together (mutual TLS)");
  }
  grpc::SslCredentialsOptions options;
  auto ca = ReadPem(line, "tls-ca");
  if (!ca.ok()) return ca.status();
  auto cert = ReadPem(line, "tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(line, "tls-key");
  if (!key.ok()) return key.status();
  options.pem_root_certs = *ca;  // empty: the system's roots
  options.pem_cert_chain = *cert;
  options.pem_private_key = *key;
  return grpc::SslCredentials(options);
}

}  // namespace iblip::client
