#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/runtime/lm_tokenizer.h"

namespace iblip::model {

// Turns a growing list of generated ids into text deltas that are safe to
// send: whole UTF-8 characters only, and never text that might turn out to
// be the start of a stop sequence. Detects stop sequences that span tokens.
// Not thread-safe; one per sequence.
class TextStreamer {
 public:
  // `tokenizer` must outlive this object.
  TextStreamer(const LmTokenizer& tokenizer,
               std::vector<std::string> stop_sequences);

  struct Delta {
    std::string text;      // newly releasable text (may be empty)
    bool stopped = false;  // a stop sequence appeared; text ends before it
  };

  // Adds one generated token.
  Delta Append(int32_t token_id);

  // The sequence ended: releases everything still held back.
  std::string Finish();

  // All text released so far.
  const std::string& text() const { return released_; }

 private:
  const LmTokenizer& tokenizer_;
  std::vector<std::string> stop_sequences_;
  std::vector<int32_t> ids_;
  std::string decoded_;   // decode(ids_)
  std::string released_;  // prefix of decoded_ already handed out
  bool stopped_ = false;
};

}  // namespace iblip::model
