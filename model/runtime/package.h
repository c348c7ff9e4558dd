#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iblip::model {

// The model package: what `model/export` writes and the server loads. A
// directory with manifest.json, TorchScript modules and tokenizer files;
// the format is described in model/PACKAGE.md.

enum class LmFamily { kLlama, kT5 };

// How the image's query embeddings meet the prompt. Both put the queries in
// front of the prompt embeddings; kImageTokens checkpoints also expect
// image_token_index placeholders, which the processor puts first.
enum class PromptLayout { kPrepend, kImageTokens };

struct ImageSpec {
  int size = 224;               // images are resized to size x size
  std::array<float, 3> mean{};  // per RGB channel, after x rescale_factor
  std::array<float, 3> std{};
  double rescale_factor = 1.0 / 255.0;
};

// A special or added token of a tokenizer. Hugging Face's tokenizers cut the
// raw text at each one's string first and give those parts the token's id
// (a prompt containing "</s>" gets the EOS id there); only the text between
// is tokenized. lstrip/rstrip: the token also swallows the whitespace on its
// left/right (T5's <extra_id_N>).
struct SpecialToken {
  std::string text;
  int32_t id = -1;
  bool lstrip = false;
  bool rstrip = false;
};

struct LmTokenizerSpec {
  std::string model_path;     // SentencePiece .model, absolute
  bool t5 = false;            // T5 (unigram, EOS appended) vs LLaMA style
  int32_t bos_token_id = -1;  // prepended to every prompt; -1 = none
  bool append_eos = false;    // T5 appends EOS to the prompt
  int32_t eos_token_id = -1;  // the tokenizer's EOS
  int32_t pad_token_id = -1;
  int32_t unk_token_id = -1;
  // Hugging Face's clean_up_tokenization after decoding (" ." -> ".").
  bool clean_up_tokenization_spaces = false;
  // Tokens added on top of the SentencePiece vocabulary ("[PAD]" -> 32000).
  std::map<std::string, int32_t> added_tokens;
  // Strings matched in the text as their token (see SpecialToken).
  std::vector<SpecialToken> special_tokens;
  // A deployment's choice, not the package's: true treats special-token
  // strings in the text as plain text (Hugging Face's
  // split_special_tokens=True).
  bool special_tokens_as_text = false;
};

struct QformerTokenizerSpec {
  std::string vocab_path;  // BERT vocab.txt, absolute
  bool lowercase = true;
  int max_length = 512;
  std::vector<SpecialToken> special_tokens;  // [CLS], [SEP], [DEC], ...
  bool special_tokens_as_text = false;       // as in LmTokenizerSpec
};

struct PackageManifest {
  std::string directory;  // absolute path of the package
  std::string model_id;
  LmFamily lm_family = LmFamily::kLlama;
  PromptLayout prompt_layout = PromptLayout::kPrepend;
  int32_t image_token_index = -1;  // kImageTokens: the placeholder id
  std::string dtype;               // "fp32", "bf16"
  int num_query_tokens = 0;
  int lm_vocab_size = 0;
  int lm_hidden_size = 0;
  int lm_num_layers = 0;  // decoder layers (the ones with a KV cache)
  int lm_kv_heads = 0;    // cache heads per layer
  int lm_head_dim = 0;
  int qformer_vocab_size = 0;
  int vision_num_layers = 0;  // encoder layers (the engine runs them in pieces)
  int max_context_tokens = 0;  // image positions + prompt + generated
  ImageSpec image;
  LmTokenizerSpec lm_tokenizer;
  QformerTokenizerSpec qformer_tokenizer;
  std::vector<int32_t> eos_token_ids;  // any of these ends a sequence
  int32_t decoder_start_token_id = 0;  // T5: the decoder's first input
  std::string vision_module_path;      // absolute
  std::string qformer_module_path;     // absolute
  std::string language_module_path;    // absolute
};

absl::string_view LmFamilyName(LmFamily family);

// Reads `directory`/manifest.json. NOT_FOUND when the package or a file it
// names is missing; FAILED_PRECONDITION when the manifest is malformed or of
// an unsupported format version. Messages name the file and the field.
absl::StatusOr<PackageManifest> LoadPackageManifest(
    const std::string& directory);

}  // namespace iblip::model
