#include "server/http/tls_context.h"

#include "absl/strings/str_cat.h"

namespace iblip::server::http {

namespace ssl = boost::asio::ssl;

absl::StatusOr<std::shared_ptr<ssl::context>> MakeTlsContext(
    const TlsFiles& files) {
  if (files.cert_file.empty() || files.key_file.empty())
    return absl::InvalidArgumentError(
        "tls: cert_file and key_file go together");
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  context->set_options(ssl::context::default_workarounds |
                           ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                           ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                       ec);
  auto failed = [&](const char* option, const std::string& path) {
    return absl::InvalidArgumentError(absl::StrCat(
        option, ": cannot use '", path, "' for HTTPS: ", ec.message()));
  };
  context->use_certificate_chain_file(files.cert_file, ec);
  if (ec) return failed("tls.cert_file", files.cert_file);
  context->use_private_key_file(files.key_file, ssl::context::pem, ec);
  if (ec) return failed("tls.key_file", files.key_file);
  if (!files.client_ca_file.empty()) {
    context->load_verify_file(files.client_ca_file, ec);
    if (ec) return failed("tls.client_ca_file", files.client_ca_file);
    context->set_verify_mode(
        ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  }
  return context;
}

}  // namespace iblip::server::http
