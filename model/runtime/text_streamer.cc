#include "model/runtime/text_streamer.h"

#include <algorithm>

#include "absl/strings/string_view.h"

namespace iblip::model {
namespace {

constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length of the longest proper prefix of a UTF-8 character at the end of s
// (bytes of a character that is not complete yet).
size_t IncompleteUtf8Tail(const std::string& s) {
  size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t needed = (c & 0xE0) == 0xC0   ? 2
                    : (c & 0xF0) == 0xE0 ? 3
                    : (c & 0xF8) == 0xF0 ? 4
                                         : 1;
    return needed > back ? back : 0;
  }
  return 0;
}

// Bytes at the end of `text` that could begin one of the stop sequences.
size_t StopPrefixTail(absl::string_view text,
                      const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > hold;
         --len) {
      if (text.substr(text.size() - len) ==
          absl::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

TextStreamer::TextStreamer(const LmTokenizer& tokenizer,
                           std::vector<std::string> stop_sequences)
    : tokenizer_(tokenizer), stop_sequences_(std::move(stop_sequences)) {}

TextStreamer::Delta TextStreamer::Append(int32_t token_id) {
  Delta delta;
  if (stopped_) return delta;
  ids_.push_back(token_id);
  decoded_ = tokenizer_.Decode(ids_);

  // Earliest stop sequence in the text not yet released (it may start inside
  // held-back text, never inside released text).
  size_t stop_at = std::string::npos;
  const size_t search_from = released_.size();
  for (const std::string& stop : stop_sequences_) {
    const size_t from =
        search_from >= stop.size() ? search_from - stop.size() + 1 : 0;
    const size_t pos = decoded_.find(stop, from);
    if (pos != std::string::npos && pos >= released_.size())
      stop_at = std::min(stop_at, pos);
  }
  if (stop_at != std::string::npos) {
    stopped_ = true;
    delta.stopped = true;
    delta.text = decoded_.substr(released_.size(), stop_at - released_.size());
    released_ += delta.text;
    return delta;
  }

  absl::string_view candidate(decoded_);
  // Trailing U+FFFDs are byte-fallback characters whose bytes are not all
  // there yet (one per byte): hold them until later tokens complete them.
  while (candidate.size() >= kReplacementChar.size() &&
         candidate.substr(candidate.size() - kReplacementChar.size()) ==
             kReplacementChar) {
    candidate.remove_suffix(kReplacementChar.size());
  }
  candidate.remove_suffix(IncompleteUtf8Tail(std::string(candidate)));
  if (tokenizer_.decode_rewrites_tail()) {
    // T5's decode drops trailing spaces and the space before "." or "'s":
    // text from the last space on may still change.
    const size_t last_space = candidate.rfind(' ');
    candidate = last_space == absl::string_view::npos
                    ? absl::string_view()
                    : candidate.substr(0, last_space);
  }
  candidate.remove_suffix(StopPrefixTail(candidate, stop_sequences_));
  if (candidate.size() > released_.size() &&
      candidate.substr(0, released_.size()) == released_) {
    delta.text = std::string(candidate.substr(released_.size()));
    released_ += delta.text;
  }
  return delta;
}

std::string TextStreamer::Finish() {
  if (stopped_ || decoded_.size() <= released_.size() ||
      decoded_.compare(0, released_.size(), released_) != 0) {
    return "";
  }
  std::string rest = decoded_.substr(released_.size());
  released_ += rest;
  return rest;
}

}  // namespace iblip::model
