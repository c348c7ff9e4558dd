#pragma once

// The boundary between our code and libsentencepiece, which lives in its own
// dlopen'ed module (iblip_spm_shim.so, loaded with RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece bundles protobuf-lite 3.14 and exports its
// symbols; in a process that also loads libprotobuf 3.21 (gRPC, torch) its
// Load() binds to 3.21 and fails its version check. Inside a DEEPBIND module
// it binds to its own copy. Only types from the C++ standard library cross
// this boundary.

#include <string>
#include <string_view>
#include <vector>

namespace iblip::model {

// One loaded SentencePiece model. Immutable after loading; thread-safe.
class SentencePieceModel {
 public:
  virtual ~SentencePieceModel() = default;
  virtual std::vector<int> Encode(std::string_view text) const = 0;
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
  virtual std::string DecodePieces(
      const std::vector<std::string>& pieces) const = 0;
  virtual std::string IdToPiece(int id) const = 0;
  virtual int PieceToId(std::string_view piece) const = 0;  // unk id if absent
  virtual int vocab_size() const = 0;
};

}  // namespace iblip::model

// Entry point exported by the shim module. Returns nullptr and writes a
// NUL-terminated message into `error` on failure; the caller owns the result.
extern "C" iblip::model::SentencePieceModel* iblip_spm_load(
    const char* path, char* error, unsigned long error_size);
