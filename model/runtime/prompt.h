#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/wordpiece_tokenizer.h"

namespace iblip::model {

// What the model receives for one instruction, as InstructBlipProcessor
// builds it (no truncation: the server rejects prompts that do not fit).
struct PromptInputs {
  // The language model's input_ids exactly as the processor returns them:
  // image_tokens layout: num_query_tokens x image_token_index, then the
  // prompt; prepend layout: the prompt only (the queries are prepended as
  // embeddings).
  std::vector<int32_t> input_ids;
  // The ids embedded after the soft prompt (both layouts put the queries
  // first, so this is input_ids without the image tokens).
  std::vector<int32_t> prompt_ids;
  // The Q-Former's ids, from the same text: [CLS] ... [SEP].
  std::vector<int32_t> qformer_input_ids;
};

PromptInputs AssemblePrompt(const PackageManifest& manifest,
                            const LmTokenizer& lm_tokenizer,
                            const WordPieceTokenizer& qformer_tokenizer,
                            absl::string_view text);

}  // namespace iblip::model
