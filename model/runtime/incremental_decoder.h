#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/runtime/lm_tokenizer.h"

namespace iblip::model {

// Decodes a growing list of ids with work per id that does not grow with the
// list: after every Append, final_text_so_far + tail() == tokenizer.Decode(ids)
// exactly, where final_text_so_far is the concatenation of what Append
// returned. Text Append returns never changes, whatever ids follow; tail() is
// the end of the decode that still may (and is never more than a few
// characters for real text).
//
// HOW. Two stages, as LmTokenizer::Decode has them:
//  1. SentencePiece text (DecodeWithoutCleanUp), with the prefix/read offsets
//     of Hugging Face's and vLLM's incremental detokenizers: decode only
//     ids[prefix:] and take what follows the already-final text of
//     ids[prefix:read]. Decoding is prefix-stable (SentencePiece concatenates
//     piece surfaces; byte-fallback runs are split only after a whole
//     character), except at the start, where the first piece loses its
//     prefix space: so the window starts where text already final was made
//     (read), one chunk back (prefix), and only where that chunk has text.
//     Trailing U+FFFD (byte-fallback bytes that may still complete a
//     character) and an incomplete UTF-8 tail stay in tail().
//  2. clean_up_tokenization and strip() (T5): the stage-1 text is cut where
//     IsCleanUpBoundary says both are piecewise; what precedes the last such
//     cut is final, the short rest is cleaned up again on each Append.
//
// COST per Append: two SentencePiece decodes of the last few ids, and work
// linear in the new text plus tail(). A run of ids that never completes a
// character (endless invalid byte-fallback bytes), or cleaned-up text with no
// cut point for a long stretch, keeps the window growing until it ends.
//
// Not thread-safe; one per sequence.
class IncrementalDecoder {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDecoder(const LmTokenizer& tokenizer);

  // Adds one id; returns the text that became final with it (may be empty).
  std::string Append(int32_t token_id);

  // The rest of Decode(ids): text that later ids may still change.
  const std::string& tail() const { return tail_; }

  // Ids the next Append decodes besides its own (tests check it stays small).
  size_t window_size() const { return window_.size(); }

 private:
  // Stage 2 on stage-1 text that is final; returns its final part.
  std::string CleanUp(absl::string_view final_raw);
  // Recomputes tail_ from the stage-2 pending text and the stage-1 tail.
  void UpdateTail(absl::string_view raw_tail);
  // Moves the window on once everything appended is final.
  void MoveWindow();

  const LmTokenizer& tokenizer_;
  const bool rewrites_text_;  // clean-up or strip (stage 2 is not identity)

  // Stage 1: the window ids[prefix:] of all ids appended. Invariant: the text
  // of ids[prefix:read] is final and non-empty (or prefix is the first id),
  // and window_final_ is the final part of the text of the whole window (it
  // starts with the text of ids[prefix:read]).
  std::vector<int32_t> window_;  // ids[prefix:]
  size_t window_read_ = 0;       // read - prefix
  std::string window_final_;

  // Stage 2: final stage-1 text not yet cut off (starts after the last cut).
  std::string pending_raw_;
  bool released_non_whitespace_ = false;  // strip(): the front is done

  std::string tail_;
};

}  // namespace iblip::model
