#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/runtime/incremental_decoder.h"
#include "model/runtime/lm_tokenizer.h"

namespace iblip::model {

// Turns a growing list of generated ids into text deltas that are safe to
// send: whole UTF-8 characters only, never text that later ids may still
// rewrite, and never text that might turn out to be the start of a stop
// sequence. Detects stop sequences that span tokens: it stops at the first
// id whose decode (tokenizer.Decode of all ids so far) holds one, and the
// text then ends right before its earliest occurrence. Without a stop, the
// deltas and Finish() concatenate to tokenizer.Decode(all ids).
//
// Work per id does not grow with the sequence (IncrementalDecoder; the stop
// search looks only at text that is new or may still change, plus the
// longest stop's length before it).
// Not thread-safe; one per sequence.
class TextStreamer {
 public:
  // `tokenizer` must outlive this object. Empty stop sequences are ignored.
  TextStreamer(const LmTokenizer& tokenizer,
               std::vector<std::string> stop_sequences);

  struct Delta {
    std::string text;      // newly releasable text (may be empty)
    bool stopped = false;  // a stop sequence appeared; text ends before it
  };

  // Adds one generated token. After a stop or Finish() it adds nothing.
  Delta Append(int32_t token_id);

  // The sequence ended: releases everything still held back ("" after a
  // stop).
  std::string Finish();

  // All text released so far.
  const std::string& text() const { return released_; }

 private:
  // Bytes at the end of unreleased_ that could begin a stop sequence.
  size_t StopPrefixLength() const;

  IncrementalDecoder decoder_;
  std::vector<std::string> stop_sequences_;
  std::string released_;
  // Final text (it never changes) not released yet: it could start a stop.
  // released_ + unreleased_ + decoder_.tail() is the decode of all ids.
  std::string unreleased_;
  bool ended_ = false;  // stopped or finished
};

}  // namespace iblip::model
