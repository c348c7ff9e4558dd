#include "model/runtime/text_cleanup.h"

#include <utility>

namespace iblip::model {
namespace {

// transformers' rules, in its order (the order matters: " ' " -> "'" can
// make " n" + "'t" into " n't" for a later rule).
constexpr std::pair<absl::string_view, absl::string_view> kCleanUpRules[] = {
    {" .", "."},     {" ?", "?"},     {" !", "!"},   {" ,", ","},
    {" ' ", "'"},    {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"},
    {" 've", "'ve"}, {" 're", "'re"}};

}  // namespace

std::string CleanUpTokenizationSpaces(std::string text) {
  for (const auto& [from, to] : kCleanUpRules) {
    size_t found = text.find(from.data(), 0, from.size());
    if (found == std::string::npos) continue;
    std::string out;
    out.reserve(text.size());
    size_t start = 0;
    while (found != std::string::npos) {
      out.append(text, start, found - start);
      out.append(to.data(), to.size());
      start = found + from.size();
      found = text.find(from.data(), start, from.size());
    }
    out.append(text, start, std::string::npos);
    text = std::move(out);
  }
  return text;
}

bool IsStrippedWhitespace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

absl::string_view StripLeadingWhitespace(absl::string_view text) {
  size_t first = 0;
  while (first < text.size() && IsStrippedWhitespace(text[first])) ++first;
  return text.substr(first);
}

absl::string_view StripTrailingWhitespace(absl::string_view text) {
  size_t end = text.size();
  while (end > 0 && IsStrippedWhitespace(text[end - 1])) --end;
  return text.substr(0, end);
}

bool IsCleanUpBoundary(char before, char after) {
  if (IsStrippedWhitespace(before) || IsStrippedWhitespace(after)) return false;
  if ((static_cast<unsigned char>(after) & 0xC0) == 0x80) return false;
  // Consecutive non-space bytes of the patterns above: "n'" (" n't"), "'t",
  // "'m", "'s", "'v", "ve" (" 've"), "'r", "re" (" 're").
  if (before == '\'') {
    return after != 't' && after != 'm' && after != 's' && after != 'v' &&
           after != 'r';
  }
  if (after == '\'') return before != 'n';
  if (after == 'e') return before != 'v' && before != 'r';
  return true;
}

}  // namespace iblip::model
