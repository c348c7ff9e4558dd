#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iblip::model {

// The model package: what `model/export` writes and the server loads.
// A directory with package.json (this manifest), TorchScript modules and the
// tokenizer files. Format described in model/PACKAGE.md.

enum class LmFamily { kLlama, kT5 };

struct ImageSpec {
  int size = 224;               // images are resized to size x size
  std::array<float, 3> mean{};  // per RGB channel, after x 1/255
  std::array<float, 3> std{};
};

struct LmTokenizerSpec {
  std::string model_path;     // SentencePiece .model, absolute
  int32_t bos_token_id = -1;  // prepended to every prompt; -1 = none
  bool append_eos = false;    // T5 appends EOS to the prompt
  int32_t eos_token_id = -1;  // the tokenizer's EOS
  int32_t pad_token_id = -1;
  // Tokens added on top of the SentencePiece vocabulary ("[PAD]" -> 1000).
  std::map<std::string, int32_t> added_tokens;
};

struct QformerTokenizerSpec {
  std::string vocab_path;  // BERT vocab.txt, absolute
  bool lowercase = true;
  int max_length = 512;
};

struct PackageManifest {
  std::string directory;  // absolute path of the package
  std::string model_id;
  LmFamily lm_family = LmFamily::kLlama;
  std::string dtype;  // "fp32", "bf16"
  int num_query_tokens = 0;
  int lm_vocab_size = 0;
  int qformer_vocab_size = 0;
  int max_context_tokens = 0;  // image positions + prompt + generated
  ImageSpec image;
  LmTokenizerSpec lm_tokenizer;
  QformerTokenizerSpec qformer_tokenizer;
  std::vector<int32_t> eos_token_ids;  // any of these ends a sequence
  std::string vision_module_path;      // absolute
  std::string language_module_path;    // absolute
};

absl::string_view LmFamilyName(LmFamily family);

// Reads `directory`/package.json. NOT_FOUND when the package or a file it
// names is missing; FAILED_PRECONDITION when the manifest is malformed or of
// an unsupported format version. Messages name the file and the field.
absl::StatusOr<PackageManifest> LoadPackageManifest(
    const std::string& directory);

}  // namespace iblip::model
