#include "model/runtime/incremental_decoder.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "model/runtime/text_cleanup.h"

namespace iblip::model {
namespace {

constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Bytes at the end of `text` that later ids may still change: U+FFFDs (one
// per byte-fallback byte of a character not complete yet; a finished
// invalid byte looks the same, and is released once text follows it) and
// the bytes of a UTF-8 character cut short.
size_t UnfinishedTail(absl::string_view text) {
  size_t held = 0;
  while (text.size() - held >= kReplacementChar.size() &&
         text.substr(text.size() - held - kReplacementChar.size(),
                     kReplacementChar.size()) == kReplacementChar) {
    held += kReplacementChar.size();
  }
  const size_t end = text.size() - held;
  for (size_t back = 1; back <= std::min<size_t>(3, end); ++back) {
    const auto c = static_cast<unsigned char>(text[end - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t needed = (c & 0xE0) == 0xC0   ? 2
                          : (c & 0xF0) == 0xE0 ? 3
                          : (c & 0xF8) == 0xF0 ? 4
                                               : 1;
    return needed > back ? held + back : held;
  }
  return held;
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(const LmTokenizer& tokenizer)
    : tokenizer_(tokenizer),
      rewrites_text_(tokenizer.cleans_up_spaces() ||
                     tokenizer.strips_whitespace()) {}

std::string IncrementalDecoder::Append(int32_t token_id) {
  window_.push_back(token_id);
  const std::string text = tokenizer_.DecodeWithoutCleanUp(window_);
  if (!absl::StartsWith(text, window_final_)) {
    // Decoding was not prefix-stable after all: release nothing more. (Never
    // seen; the streaming tests and the fuzzer check the whole output.)
    UpdateTail("");
    return "";
  }
  const absl::string_view added =
      absl::string_view(text).substr(window_final_.size());
  const size_t unfinished = UnfinishedTail(added);
  const absl::string_view final_raw =
      added.substr(0, added.size() - unfinished);
  window_final_.append(final_raw.data(), final_raw.size());
  if (unfinished == 0) MoveWindow();

  std::string final_text =
      rewrites_text_ ? CleanUp(final_raw) : std::string(final_raw);
  UpdateTail(added.substr(final_raw.size()));
  return final_text;
}

void IncrementalDecoder::MoveWindow() {
  // The next window starts at the read offset (the last point where all was
  // final), if the ids from there make text: then the first piece's prefix
  // space, which decoding drops at the start of a window, is within text
  // already final, and later pieces decode as they do in the whole.
  std::string from_read = tokenizer_.DecodeWithoutCleanUp(
      absl::MakeConstSpan(window_).subspan(window_read_));
  if (!from_read.empty()) {
    window_.erase(window_.begin(), window_.begin() + window_read_);
    window_final_ = std::move(from_read);
  }
  window_read_ = window_.size();
}

std::string IncrementalDecoder::CleanUp(absl::string_view final_raw) {
  const size_t old_size = pending_raw_.size();
  pending_raw_.append(final_raw.data(), final_raw.size());
  // The last cut point; earlier pairs were checked before.
  size_t cut = 0;
  for (size_t c = pending_raw_.size(); c-- > std::max<size_t>(old_size, 1);) {
    if (IsCleanUpBoundary(pending_raw_[c - 1], pending_raw_[c])) {
      cut = c;
      break;
    }
  }
  if (cut == 0) return "";
  std::string out = pending_raw_.substr(0, cut);
  pending_raw_.erase(0, cut);
  if (tokenizer_.cleans_up_spaces())
    out = CleanUpTokenizationSpaces(std::move(out));
  if (tokenizer_.strips_whitespace() && !released_non_whitespace_) {
    out = std::string(StripLeadingWhitespace(out));
    released_non_whitespace_ = true;  // `out` ends in non-whitespace
  }
  return out;
}

void IncrementalDecoder::UpdateTail(absl::string_view raw_tail) {
  if (!rewrites_text_) {
    tail_.assign(raw_tail.data(), raw_tail.size());
    return;
  }
  std::string rest = pending_raw_;
  rest.append(raw_tail.data(), raw_tail.size());
  if (tokenizer_.cleans_up_spaces())
    rest = CleanUpTokenizationSpaces(std::move(rest));
  absl::string_view view(rest);
  if (tokenizer_.strips_whitespace()) {
    view = StripTrailingWhitespace(view);
    if (!released_non_whitespace_) view = StripLeadingWhitespace(view);
  }
  tail_.assign(view.data(), view.size());
}

}  // namespace iblip::model
