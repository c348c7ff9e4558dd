#include "model/runtime/wordpiece_tokenizer.h"

#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iblip::model {
namespace {

constexpr size_t kMaxCharsPerWord = 100;  // BERT's limit; longer words -> [UNK]

bool IsAsciiPunctuation(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
         (c >= 123 && c <= 126);
}

bool IsWhitespace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Splits on whitespace and makes every ASCII punctuation mark its own word.
// TODO(issue 4): Unicode punctuation, accent stripping and CJK isolation.
std::vector<std::string> BasicTokenize(absl::string_view text, bool lowercase) {
  std::vector<std::string> words;
  std::string current;
  auto flush = [&] {
    if (!current.empty()) words.push_back(std::move(current));
    current.clear();
  };
  for (unsigned char c : text) {
    if (c == 0 || (c < 32 && !IsWhitespace(c)) || c == 127)
      continue;  // control chars
    if (IsWhitespace(c)) {
      flush();
    } else if (IsAsciiPunctuation(c)) {
      flush();
      words.emplace_back(1, static_cast<char>(c));
    } else {
      current.push_back(lowercase && c < 128
                            ? static_cast<char>(std::tolower(c))
                            : static_cast<char>(c));
    }
  }
  flush();
  return words;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Load(
    const QformerTokenizerSpec& spec) {
  std::ifstream in(spec.vocab_path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("Q-Former vocab not found: ", spec.vocab_path));
  }
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer(spec));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    t->ids_.emplace(line, static_cast<int32_t>(t->tokens_.size()));
    t->tokens_.push_back(line);
  }
  t->cls_id_ = t->IdOf("[CLS]");
  t->sep_id_ = t->IdOf("[SEP]");
  t->unk_id_ = t->IdOf("[UNK]");
  if (t->cls_id_ < 0 || t->sep_id_ < 0 || t->unk_id_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(spec.vocab_path, ": vocab lacks [CLS], [SEP] or [UNK]"));
  }
  return t;
}

int32_t WordPieceTokenizer::IdOf(absl::string_view token) const {
  auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

void WordPieceTokenizer::AppendWordPieces(absl::string_view word,
                                          std::vector<int32_t>& ids) const {
  if (word.size() > kMaxCharsPerWord) {
    ids.push_back(unk_id_);
    return;
  }
  std::vector<int32_t> pieces;
  size_t start = 0;
  while (start < word.size()) {
    int32_t found = -1;
    size_t end = word.size();
    for (; end > start; --end) {
      std::string candidate(word.substr(start, end - start));
      if (start > 0) candidate = "##" + candidate;
      found = IdOf(candidate);
      if (found >= 0) break;
    }
    if (found < 0) {  // no piece matches: the whole word is unknown
      ids.push_back(unk_id_);
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
}

std::vector<int32_t> WordPieceTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> body;
  for (const std::string& word : BasicTokenize(text, spec_.lowercase)) {
    AppendWordPieces(word, body);
  }
  const size_t max_body =
      spec_.max_length > 2 ? static_cast<size_t>(spec_.max_length) - 2 : 0;
  if (body.size() > max_body)
    body.erase(body.begin(), body.end() - max_body);  // left truncation
  std::vector<int32_t> ids;
  ids.reserve(body.size() + 2);
  ids.push_back(cls_id_);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(sep_id_);
  return ids;
}

std::string WordPieceTokenizer::TokenString(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) return "";
  return tokens_[id];
}

}  // namespace iblip::model
