#include "model/runtime/lm_tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/runtime/special_tokens.h"
#include "model/runtime/text_cleanup.h"

#ifndef IBLIP_SPM_SHIM_PATH
#error "IBLIP_SPM_SHIM_PATH must be defined by the build"
#endif

namespace iblip::model {

using LoadFn = SentencePieceModel* (*)(const char*, char*, unsigned long);

std::string DefaultSentencePieceShimPath() {
  if (const char* env = std::getenv("IBLIP_SPM_SHIM");
      env != nullptr && *env != '\0') {
    return env;
  }
  return IBLIP_SPM_SHIM_PATH;
}

absl::StatusOr<std::unique_ptr<LmTokenizer>> LmTokenizer::Load(
    const LmTokenizerSpec& spec, const std::string& shim_path) {
  const std::string path =
      shim_path.empty() ? DefaultSentencePieceShimPath() : shim_path;
  // DEEPBIND: the module's sentencepiece binds to its own bundled protobuf.
#ifdef IBLIP_SPM_NO_DEEPBIND
  constexpr int kDeepBind = 0;  // sanitizer builds (see model/CMakeLists.txt)
#else
  constexpr int kDeepBind = RTLD_DEEPBIND;
#endif
  void* module = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);
  if (module == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load the SentencePiece module ", path, ": ", dlerror()));
  }
  auto load = reinterpret_cast<LoadFn>(dlsym(module, "iblip_spm_load"));
  if (load == nullptr) {
    dlclose(module);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has no iblip_spm_load"));
  }
  char error[512] = {0};
  std::unique_ptr<SentencePieceModel> model(
      load(spec.model_path.c_str(), error, sizeof(error)));
  if (model == nullptr) {
    dlclose(module);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load tokenizer ", spec.model_path, ": ", error));
  }
  return std::unique_ptr<LmTokenizer>(
      new LmTokenizer(spec, module, std::move(model)));
}

LmTokenizer::LmTokenizer(LmTokenizerSpec spec, void* module,
                         std::unique_ptr<SentencePieceModel> model)
    : spec_(std::move(spec)), module_(module), model_(std::move(model)) {
  for (int32_t id : {spec_.bos_token_id, spec_.eos_token_id, spec_.pad_token_id,
                     spec_.unk_token_id}) {
    if (id >= 0) special_ids_.insert(id);
  }
  for (const auto& [token, id] : spec_.added_tokens) special_ids_.insert(id);
  if (!spec_.special_tokens_as_text) split_tokens_ = spec_.special_tokens;
}

LmTokenizer::~LmTokenizer() {
  model_.reset();  // its code lives in the module: destroy it first
  dlclose(module_);
}

std::vector<int32_t> LmTokenizer::EncodePrompt(absl::string_view text,
                                               int max_length) const {
  // Each part between special-token strings is encoded on its own, as the
  // slow tokenizers do (legacy mode: SentencePiece adds its dummy prefix to
  // every part).
  std::vector<int> body;
  for (const TextPiece& piece : SplitOnSpecialTokens(text, split_tokens_)) {
    if (piece.special_id >= 0) {
      body.push_back(piece.special_id);
      continue;
    }
    const std::vector<int> ids =
        model_->Encode(std::string_view(piece.text.data(), piece.text.size()));
    body.insert(body.end(), ids.begin(), ids.end());
  }
  if (max_length > 0) {
    const int specials = (spec_.bos_token_id >= 0) +
                         (spec_.append_eos && spec_.eos_token_id >= 0);
    const size_t keep = static_cast<size_t>(std::max(0, max_length - specials));
    if (body.size() > keep) body.erase(body.begin(), body.end() - keep);
  }
  std::vector<int32_t> ids;
  ids.reserve(body.size() + 2);
  if (spec_.bos_token_id >= 0) ids.push_back(spec_.bos_token_id);
  ids.insert(ids.end(), body.begin(), body.end());
  if (spec_.append_eos && spec_.eos_token_id >= 0)
    ids.push_back(spec_.eos_token_id);
  return ids;
}

namespace {

constexpr absl::string_view kWordBoundary =
    "\xE2\x96\x81";  // U+2581, SentencePiece's space

}  // namespace

std::string LmTokenizer::DecodeWithoutCleanUp(
    absl::Span<const int32_t> ids) const {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  const int size = model_->vocab_size();
  for (int32_t id : ids) {
    if (special_ids_.count(id) != 0 || id < 0 || id >= size) continue;
    pieces.push_back(model_->IdToPiece(id));
  }
  // The tokenizer added the prefix space itself, so decoding removes it.
  if (!pieces.empty() && absl::string_view(pieces[0]).substr(
                             0, kWordBoundary.size()) == kWordBoundary) {
    pieces[0].erase(0, kWordBoundary.size());
  }
  return pieces.empty() ? "" : model_->DecodePieces(pieces);
}

std::string LmTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text = DecodeWithoutCleanUp(ids);
  if (cleans_up_spaces()) text = CleanUpTokenizationSpaces(std::move(text));
  if (strips_whitespace()) {
    return std::string(StripTrailingWhitespace(StripLeadingWhitespace(text)));
  }
  return text;
}

std::string LmTokenizer::TokenString(int32_t id) const {
  for (const auto& [token, added_id] : spec_.added_tokens) {
    if (added_id == id) return token;
  }
  if (id < 0 || id >= model_->vocab_size()) return "";
  return model_->IdToPiece(id);
}

int LmTokenizer::vocab_size() const {
  int size = model_->vocab_size();
  for (const auto& [token, id] : spec_.added_tokens)
    size = std::max(size, id + 1);
  return size;
}

}  // namespace iblip::model
