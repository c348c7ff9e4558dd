// Compiled into the iblip_spm_shim MODULE only: the one place that links
// libsentencepiece. See sentencepiece_shim.h for why.
#include "model/runtime/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <memory>

namespace {

class SentencePieceModelImpl final : public iblip::model::SentencePieceModel {
 public:
  explicit SentencePieceModelImpl(
      std::unique_ptr<sentencepiece::SentencePieceProcessor> p)
      : processor_(std::move(p)) {}

  std::vector<int> Encode(std::string_view text) const override {
    std::vector<int> ids;
    processor_->Encode(text, &ids).IgnoreError();
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string text;
    processor_->Decode(ids, &text).IgnoreError();
    return text;
  }
  std::string DecodePieces(
      const std::vector<std::string>& pieces) const override {
    std::string text;
    processor_->Decode(pieces, &text).IgnoreError();
    return text;
  }
  std::string IdToPiece(int id) const override {
    return processor_->IdToPiece(id);
  }
  int PieceToId(std::string_view piece) const override {
    return processor_->PieceToId(piece);
  }
  int vocab_size() const override { return processor_->GetPieceSize(); }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace

extern "C" __attribute__((visibility("default")))
iblip::model::SentencePieceModel*
iblip_spm_load(const char* path, char* error, unsigned long error_size) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    if (error_size > 0) {
      std::strncpy(error, status.ToString().c_str(), error_size - 1);
      error[error_size - 1] = '\0';
    }
    return nullptr;
  }
  return new SentencePieceModelImpl(std::move(processor));
}
