#include "model/runtime/package.h"

#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace iblip::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormatVersion = 2;  // 2: paged methods, vision pieces (PACKAGE.md)

// Walks "a.b.c" inside the manifest and returns the value, or an error that
// names the path.
class ManifestReader {
 public:
  ManifestReader(const json& root, std::string file)
      : root_(root), file_(std::move(file)) {}

  template <typename T>
  absl::StatusOr<T> Get(const std::string& path) const {
    const json* node = Find(path);
    if (node == nullptr) return Error(path, "is missing");
    try {
      return node->get<T>();
    } catch (const json::exception& e) {
      return Error(path, absl::StrCat("has the wrong type (", e.what(), ")"));
    }
  }

  template <typename T>
  absl::StatusOr<T> GetOr(const std::string& path, T fallback) const {
    const json* node = Find(path);
    if (node == nullptr || node->is_null()) return fallback;
    return Get<T>(path);
  }

  absl::Status Error(const std::string& path, absl::string_view what) const {
    return absl::FailedPreconditionError(
        absl::StrCat(file_, ": field '", path, "' ", what));
  }

 private:
  const json* Find(const std::string& path) const {
    const json* node = &root_;
    size_t start = 0;
    while (start <= path.size()) {
      size_t dot = path.find('.', start);
      std::string key = path.substr(
          start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!node->is_object() || !node->contains(key)) return nullptr;
      node = &(*node)[key];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return node;
  }

  const json& root_;
  std::string file_;
};

// `path`: a list of {"text", "id", "lstrip", "rstrip"}. Packages exported
// before the field existed get `fallback` (their special and added tokens,
// without whitespace stripping).
absl::StatusOr<std::vector<SpecialToken>> ReadSpecialTokens(
    const json& root, const ManifestReader& r, const std::string& section,
    std::vector<SpecialToken> fallback) {
  const std::string path = section + ".special_tokens";
  if (!root.contains(section) || !root[section].is_object() ||
      !root[section].contains("special_tokens")) {
    return fallback;
  }
  const json& list = root[section]["special_tokens"];
  if (!list.is_array()) return r.Error(path, "is not a list");
  std::vector<SpecialToken> tokens;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& item = list[i];
    const std::string where = absl::StrCat(path, "[", i, "]");
    if (!item.is_object() || !item.contains("text") ||
        !item["text"].is_string() || !item.contains("id") ||
        !item["id"].is_number_integer()) {
      return r.Error(where, "needs a string 'text' and an integer 'id'");
    }
    SpecialToken token;
    token.text = item["text"].get<std::string>();
    token.id = item["id"].get<int32_t>();
    token.lstrip = item.value("lstrip", false);
    token.rstrip = item.value("rstrip", false);
    if (token.text.empty() || token.id < 0)
      return r.Error(where, "has an empty text or a negative id");
    tokens.push_back(std::move(token));
  }
  return tokens;
}

absl::StatusOr<std::string> ExistingFile(const fs::path& dir,
                                         const std::string& name,
                                         const std::string& field) {
  fs::path path = dir / name;
  if (!fs::is_regular_file(path)) {
    return absl::NotFoundError(absl::StrCat("model package: ", field,
                                            " names '", path.string(),
                                            "', which does not exist"));
  }
  return path.string();
}

}  // namespace

absl::string_view LmFamilyName(LmFamily family) {
  return family == LmFamily::kLlama ? "llama" : "t5";
}

absl::StatusOr<PackageManifest> LoadPackageManifest(
    const std::string& directory) {
  std::error_code ec;
  fs::path dir = fs::absolute(directory, ec);
  fs::path file = dir / "manifest.json";
  if (!fs::is_directory(dir)) {
    return absl::NotFoundError(
        absl::StrCat("model package directory not found: ", directory));
  }
  std::ifstream in(file);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "model package has no manifest.json: ", file.string(),
        " (make one with model/export --checkpoint HF_DIR --output DIR)"));
  }
  json root = json::parse(in, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::FailedPreconditionError(
        absl::StrCat(file.string(), ": not a JSON object"));
  }
  ManifestReader r(root, file.string());
  PackageManifest m;
  m.directory = dir.string();

  int version = 0;
  ASSIGN_OR_RETURN(version, r.Get<int>("format_version"));
  if (version != kFormatVersion) {
    return r.Error(
        "format_version",
        absl::StrCat("is ", version, "; this server reads ", kFormatVersion,
                     " (export the checkpoint again with model/export)"));
  }
  ASSIGN_OR_RETURN(m.model_id, r.Get<std::string>("model_id"));
  std::string text;
  ASSIGN_OR_RETURN(text, r.Get<std::string>("lm_family"));
  if (text == "llama") {
    m.lm_family = LmFamily::kLlama;
  } else if (text == "t5") {
    m.lm_family = LmFamily::kT5;
  } else {
    return r.Error("lm_family",
                   absl::StrCat("is '", text, "', expected llama or t5"));
  }
  ASSIGN_OR_RETURN(text, r.GetOr<std::string>("prompt_layout", "prepend"));
  if (text == "prepend") {
    m.prompt_layout = PromptLayout::kPrepend;
  } else if (text == "image_tokens") {
    m.prompt_layout = PromptLayout::kImageTokens;
  } else {
    return r.Error(
        "prompt_layout",
        absl::StrCat("is '", text, "', expected prepend or image_tokens"));
  }
  ASSIGN_OR_RETURN(m.image_token_index,
                   r.GetOr<int32_t>("image_token_index", -1));
  if (m.prompt_layout == PromptLayout::kImageTokens &&
      m.image_token_index < 0) {
    return r.Error("image_token_index",
                   "is required by prompt_layout image_tokens");
  }
  ASSIGN_OR_RETURN(m.dtype, r.Get<std::string>("dtype"));
  ASSIGN_OR_RETURN(m.num_query_tokens, r.Get<int>("num_query_tokens"));
  ASSIGN_OR_RETURN(m.lm_vocab_size, r.Get<int>("lm_vocab_size"));
  ASSIGN_OR_RETURN(m.lm_hidden_size, r.Get<int>("lm_hidden_size"));
  ASSIGN_OR_RETURN(m.lm_num_layers, r.Get<int>("lm_num_layers"));
  ASSIGN_OR_RETURN(m.lm_kv_heads, r.Get<int>("lm_kv_heads"));
  ASSIGN_OR_RETURN(m.lm_head_dim, r.Get<int>("lm_head_dim"));
  if (m.lm_num_layers <= 0 || m.lm_kv_heads <= 0 || m.lm_head_dim <= 0) {
    return r.Error("lm_num_layers", "and lm_kv_heads, lm_head_dim must be > 0");
  }
  ASSIGN_OR_RETURN(m.qformer_vocab_size, r.Get<int>("qformer_vocab_size"));
  ASSIGN_OR_RETURN(m.vision_num_layers, r.Get<int>("vision_num_layers"));
  if (m.vision_num_layers <= 0)
    return r.Error("vision_num_layers", "must be > 0");
  ASSIGN_OR_RETURN(m.max_context_tokens, r.Get<int>("max_context_tokens"));
  if (m.num_query_tokens <= 0)
    return r.Error("num_query_tokens", "must be > 0");
  if (m.lm_vocab_size <= 0) return r.Error("lm_vocab_size", "must be > 0");
  if (m.max_context_tokens <= m.num_query_tokens + 1) {
    return r.Error("max_context_tokens", "must exceed num_query_tokens + 1");
  }

  ASSIGN_OR_RETURN(m.image.size, r.Get<int>("image.size"));
  ASSIGN_OR_RETURN(m.image.mean, (r.Get<std::array<float, 3>>("image.mean")));
  ASSIGN_OR_RETURN(m.image.std, (r.Get<std::array<float, 3>>("image.std")));
  ASSIGN_OR_RETURN(m.image.rescale_factor,
                   r.GetOr<double>("image.rescale_factor", 1.0 / 255.0));
  if (m.image.size <= 0) return r.Error("image.size", "must be > 0");
  for (float s : m.image.std) {
    if (!(s > 0)) return r.Error("image.std", "must be > 0");
  }

  std::string name;
  ASSIGN_OR_RETURN(name, r.Get<std::string>("lm_tokenizer.file"));
  ASSIGN_OR_RETURN(m.lm_tokenizer.model_path,
                   ExistingFile(dir, name, "lm_tokenizer.file"));
  ASSIGN_OR_RETURN(text, r.GetOr<std::string>("lm_tokenizer.kind", "llama"));
  m.lm_tokenizer.t5 = text == "t5";
  ASSIGN_OR_RETURN(m.lm_tokenizer.bos_token_id,
                   r.GetOr<int32_t>("lm_tokenizer.bos_token_id", -1));
  ASSIGN_OR_RETURN(m.lm_tokenizer.append_eos,
                   r.GetOr<bool>("lm_tokenizer.append_eos", false));
  ASSIGN_OR_RETURN(m.lm_tokenizer.eos_token_id,
                   r.GetOr<int32_t>("lm_tokenizer.eos_token_id", -1));
  ASSIGN_OR_RETURN(m.lm_tokenizer.pad_token_id,
                   r.GetOr<int32_t>("lm_tokenizer.pad_token_id", -1));
  ASSIGN_OR_RETURN(m.lm_tokenizer.unk_token_id,
                   r.GetOr<int32_t>("lm_tokenizer.unk_token_id", -1));
  ASSIGN_OR_RETURN(
      m.lm_tokenizer.clean_up_tokenization_spaces,
      r.GetOr<bool>("lm_tokenizer.clean_up_tokenization_spaces", false));
  ASSIGN_OR_RETURN(m.lm_tokenizer.added_tokens,
                   (r.GetOr<std::map<std::string, int32_t>>(
                       "lm_tokenizer.added_tokens", {})));
  std::vector<SpecialToken> added;
  for (const auto& [token, id] : m.lm_tokenizer.added_tokens)
    added.push_back({token, id});
  ASSIGN_OR_RETURN(m.lm_tokenizer.special_tokens,
                   ReadSpecialTokens(root, r, "lm_tokenizer", added));

  ASSIGN_OR_RETURN(name, r.Get<std::string>("qformer_tokenizer.vocab_file"));
  ASSIGN_OR_RETURN(m.qformer_tokenizer.vocab_path,
                   ExistingFile(dir, name, "qformer_tokenizer.vocab_file"));
  ASSIGN_OR_RETURN(m.qformer_tokenizer.lowercase,
                   r.GetOr<bool>("qformer_tokenizer.lowercase", true));
  ASSIGN_OR_RETURN(m.qformer_tokenizer.max_length,
                   r.GetOr<int>("qformer_tokenizer.max_length", 512));
  // Older packages: BERT's own special tokens (WordPieceTokenizer::Load
  // drops those its vocabulary lacks) and the added ones.
  std::map<std::string, int32_t> qformer_added;
  ASSIGN_OR_RETURN(qformer_added, (r.GetOr<std::map<std::string, int32_t>>(
                                      "qformer_tokenizer.added_tokens", {})));
  std::vector<SpecialToken> bert;
  for (const char* token : {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"})
    bert.push_back({token, -1});
  for (const auto& [token, id] : qformer_added) bert.push_back({token, id});
  ASSIGN_OR_RETURN(m.qformer_tokenizer.special_tokens,
                   ReadSpecialTokens(root, r, "qformer_tokenizer", bert));

  ASSIGN_OR_RETURN(m.eos_token_ids,
                   r.Get<std::vector<int32_t>>("generation.eos_token_ids"));
  if (m.eos_token_ids.empty())
    return r.Error("generation.eos_token_ids", "is empty");
  ASSIGN_OR_RETURN(m.decoder_start_token_id,
                   r.GetOr<int32_t>("generation.decoder_start_token_id", 0));

  ASSIGN_OR_RETURN(name, r.Get<std::string>("modules.vision_encoder"));
  ASSIGN_OR_RETURN(m.vision_module_path,
                   ExistingFile(dir, name, "modules.vision_encoder"));
  ASSIGN_OR_RETURN(name, r.Get<std::string>("modules.qformer"));
  ASSIGN_OR_RETURN(m.qformer_module_path,
                   ExistingFile(dir, name, "modules.qformer"));
  ASSIGN_OR_RETURN(name, r.Get<std::string>("modules.language_model"));
  ASSIGN_OR_RETURN(m.language_module_path,
                   ExistingFile(dir, name, "modules.language_model"));
  return m;
}

}  // namespace iblip::model
