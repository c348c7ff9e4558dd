#include "model/runtime/text_streamer.h"

#include <algorithm>

#include "absl/strings/string_view.h"

namespace iblip::model {

TextStreamer::TextStreamer(const LmTokenizer& tokenizer,
                           std::vector<std::string> stop_sequences)
    : decoder_(tokenizer), stop_sequences_(std::move(stop_sequences)) {
  stop_sequences_.erase(
      std::remove(stop_sequences_.begin(), stop_sequences_.end(), ""),
      stop_sequences_.end());
}

TextStreamer::Delta TextStreamer::Append(int32_t token_id) {
  Delta delta;
  if (ended_) return delta;
  // unreleased_ + tail held no stop before this id, and unreleased_ has not
  // changed since: a new occurrence ends past it.
  const size_t searched = unreleased_.size();
  unreleased_ += decoder_.Append(token_id);
  const std::string& tail = decoder_.tail();

  // Earliest stop sequence in the text not yet released. Released text
  // never ends in a proper prefix of a stop (StopPrefixLength), so no stop
  // starts inside it.
  size_t stop_at = std::string::npos;
  if (!stop_sequences_.empty()) {
    const std::string text = unreleased_ + tail;
    for (const std::string& stop : stop_sequences_) {
      const size_t from =
          searched >= stop.size() ? searched - stop.size() + 1 : 0;
      stop_at = std::min(stop_at, text.find(stop, from));
    }
    if (stop_at != std::string::npos) {
      ended_ = true;
      delta.stopped = true;
      delta.text = text.substr(0, stop_at);
      released_ += delta.text;
      unreleased_.clear();
      return delta;
    }
  }

  const size_t release = unreleased_.size() - StopPrefixLength();
  delta.text = unreleased_.substr(0, release);
  unreleased_.erase(0, release);
  released_ += delta.text;
  return delta;
}

size_t TextStreamer::StopPrefixLength() const {
  const absl::string_view text(unreleased_);
  size_t hold = 0;
  for (const std::string& stop : stop_sequences_) {
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

std::string TextStreamer::Finish() {
  if (ended_) return "";
  ended_ = true;
  std::string rest = unreleased_ + decoder_.tail();
  unreleased_.clear();
  released_ += rest;
  return rest;
}

}  // namespace iblip::model
