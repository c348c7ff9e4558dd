#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iblip::server {

// Bearer-token (API key) authentication. Keys come from a file, one per line
// (blank lines and lines starting with # are skipped). Only their SHA-256
// digests are kept, and a presented key is checked by comparing digests in
// constant time against every key, so neither the timing nor memory tells
// anything about the keys. Thread-safe (immutable).
class ApiKeyAuth {
 public:
  static absl::StatusOr<std::unique_ptr<ApiKeyAuth>> LoadFile(
      const std::string& path);
  static std::unique_ptr<ApiKeyAuth> FromKeys(
      const std::vector<std::string>& keys);

  // `authorization` is the header's value ("Bearer KEY"). OK, or
  // UNAUTHENTICATED saying what is wrong (never echoing the key).
  absl::Status Check(absl::string_view authorization) const;

 private:
  using Digest = std::array<unsigned char, 32>;
  static Digest Sha256(absl::string_view bytes);
  std::vector<Digest> keys_;
};

}  // namespace iblip::server
