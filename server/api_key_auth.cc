#include "server/api_key_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace iblip::server {

ApiKeyAuth::Digest ApiKeyAuth::Sha256(absl::string_view bytes) {
  Digest digest{};
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, EVP_sha256(),
             nullptr);
  return digest;
}

std::unique_ptr<ApiKeyAuth> ApiKeyAuth::FromKeys(
    const std::vector<std::string>& keys) {
  auto auth = std::unique_ptr<ApiKeyAuth>(new ApiKeyAuth());
  for (const std::string& key : keys) auth->keys_.push_back(Sha256(key));
  return auth;
}

absl::StatusOr<std::unique_ptr<ApiKeyAuth>> ApiKeyAuth::LoadFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("auth.api_keys_file: cannot read '", path, "'"));
  }
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view key = absl::StripAsciiWhitespace(line);
    if (key.empty() || absl::StartsWith(key, "#")) continue;
    keys.emplace_back(key);
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("auth.api_keys_file: '", path, "' holds no key"));
  }
  return FromKeys(keys);
}

absl::Status ApiKeyAuth::Check(absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "authorization: missing; send 'authorization: Bearer <API key>'");
  }
  absl::string_view key = authorization;
  if (!absl::ConsumePrefix(&key, "Bearer ") &&
      !absl::ConsumePrefix(&key, "bearer ")) {
    return absl::UnauthenticatedError(
        "authorization: expected 'Bearer <API key>'");
  }
  const Digest presented = Sha256(absl::StripAsciiWhitespace(key));
  bool match = false;
  for (const Digest& known : keys_) {  // no early exit: constant time
    match |= CRYPTO_memcmp(presented.data(), known.data(), known.size()) == 0;
  }
  if (!match)
    return absl::UnauthenticatedError("authorization: unknown API key");
  return absl::OkStatus();
}

}  // namespace iblip::server
