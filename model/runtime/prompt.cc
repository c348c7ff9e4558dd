#include "model/runtime/prompt.h"

namespace iblip::model {

PromptInputs AssemblePrompt(const PackageManifest& manifest,
                            const LmTokenizer& lm_tokenizer,
                            const WordPieceTokenizer& qformer_tokenizer,
                            absl::string_view text) {
  PromptInputs inputs;
  inputs.prompt_ids = lm_tokenizer.EncodePrompt(text);
  if (manifest.prompt_layout == PromptLayout::kImageTokens &&
      manifest.image_token_index >= 0) {
    // The processor puts the image tokens first, before BOS.
    inputs.input_ids.assign(manifest.num_query_tokens,
                            manifest.image_token_index);
  }
  inputs.input_ids.insert(inputs.input_ids.end(), inputs.prompt_ids.begin(),
                          inputs.prompt_ids.end());
  inputs.qformer_input_ids = qformer_tokenizer.Encode(text);
  return inputs;
}

}  // namespace iblip::model
