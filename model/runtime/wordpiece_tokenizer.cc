#include "model/runtime/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/runtime/special_tokens.h"

namespace iblip::model {
namespace {

constexpr size_t kMaxCharsPerWord = 100;  // BERT's max_input_chars_per_word

using Codepoints = std::vector<utf8proc_int32_t>;

// Invalid UTF-8 bytes become U+FFFD, which the clean-up step drops.
Codepoints DecodeUtf8(absl::string_view text) {
  Codepoints out;
  out.reserve(text.size());
  auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t remaining = static_cast<utf8proc_ssize_t>(text.size());
  while (remaining > 0) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p, remaining, &cp);
    if (n <= 0) {
      cp = 0xFFFD;
      n = 1;
    }
    out.push_back(cp);
    p += n;
    remaining -= n;
  }
  return out;
}

std::string EncodeUtf8(const Codepoints& cps) {
  std::string out;
  utf8proc_uint8_t buffer[4];
  for (utf8proc_int32_t cp : cps) {
    const utf8proc_ssize_t n = utf8proc_encode_char(cp, buffer);
    out.append(reinterpret_cast<char*>(buffer), static_cast<size_t>(n));
  }
  return out;
}

// utf8proc_map with the given options (NFC/NFD).
Codepoints Normalize(const Codepoints& cps, utf8proc_option_t options) {
  utf8proc_uint8_t* mapped = nullptr;
  const std::string utf8 = EncodeUtf8(cps);
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
      static_cast<utf8proc_ssize_t>(utf8.size()), &mapped, options);
  if (n < 0) return cps;
  Codepoints out = DecodeUtf8(absl::string_view(reinterpret_cast<char*>(mapped),
                                                static_cast<size_t>(n)));
  std::free(mapped);
  return out;
}

bool IsWhitespace(utf8proc_int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

bool IsControl(utf8proc_int32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

bool IsPunctuation(utf8proc_int32_t cp) {
  // ASCII symbols count as punctuation too ("$", "^", "`").
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) ||
      (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  const utf8proc_category_t c = utf8proc_category(cp);
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool IsCjk(utf8proc_int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Load(
    const QformerTokenizerSpec& spec) {
  std::ifstream in(spec.vocab_path);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat("Q-Former vocab not found: ", spec.vocab_path));
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
  // Added tokens ([DEC]) take the ids after vocab.txt, as in Hugging Face;
  // they extend the vocabulary so ids and vocab_size() agree with the
  // model's resized embedding. An id further out is a broken manifest.
  const size_t file_vocab = t->tokens_.size();
  for (const SpecialToken& token : spec.special_tokens) {
    if (token.id < 0 || static_cast<size_t>(token.id) < file_vocab) continue;
    if (static_cast<size_t>(token.id) >= file_vocab + spec.special_tokens.size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "qformer_tokenizer.special_tokens: id ", token.id, " of \"",
          token.text.substr(0, 64), "\" is beyond the vocabulary (", file_vocab,
          " entries) and its added tokens"));
    }
    if (t->tokens_.size() <= static_cast<size_t>(token.id))
      t->tokens_.resize(token.id + 1);
    t->tokens_[token.id] = token.text;
    t->ids_.emplace(token.text, token.id);
  }
  if (!spec.special_tokens_as_text) {
    for (SpecialToken token : spec.special_tokens) {
      if (token.id < 0) token.id = t->IdOf(token.text);  // BERT's own
      if (token.id >= 0) t->split_tokens_.push_back(std::move(token));
    }
  }
  return t;
}

int32_t WordPieceTokenizer::IdOf(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<std::string> WordPieceTokenizer::BasicTokenize(
    absl::string_view text) const {
  // Clean up and isolate CJK ideographs.
  Codepoints cleaned;
  for (utf8proc_int32_t cp : DecodeUtf8(text)) {
    if (cp == 0 || cp == 0xFFFD || IsControl(cp)) continue;
    if (IsWhitespace(cp)) {
      cleaned.push_back(' ');
    } else if (IsCjk(cp)) {
      cleaned.insert(cleaned.end(), {' ', cp, ' '});
    } else {
      cleaned.push_back(cp);
    }
  }
  cleaned = Normalize(cleaned, static_cast<utf8proc_option_t>(
                                   UTF8PROC_STABLE | UTF8PROC_COMPOSE));

  std::vector<std::string> words;
  Codepoints word;
  auto flush = [&] {
    if (!word.empty()) words.push_back(EncodeUtf8(word));
    word.clear();
  };
  auto add_token = [&](Codepoints token) {
    if (spec_.lowercase) {
      for (auto& cp : token) cp = utf8proc_tolower(cp);
      // Accents go with lower-casing (strip_accents unset): NFD, drop Mn.
      Codepoints stripped;
      for (utf8proc_int32_t cp :
           Normalize(token, static_cast<utf8proc_option_t>(
                                UTF8PROC_STABLE | UTF8PROC_DECOMPOSE))) {
        if (utf8proc_category(cp) != UTF8PROC_CATEGORY_MN)
          stripped.push_back(cp);
      }
      token = std::move(stripped);
    }
    for (utf8proc_int32_t cp : token) {
      if (IsPunctuation(cp)) {
        flush();
        word.push_back(cp);
        flush();
      } else {
        word.push_back(cp);
      }
    }
    flush();
  };
  Codepoints token;
  for (utf8proc_int32_t cp : cleaned) {
    if (cp == ' ') {
      if (!token.empty()) add_token(std::move(token));
      token.clear();
    } else {
      token.push_back(cp);
    }
  }
  if (!token.empty()) add_token(std::move(token));
  return words;
}

void WordPieceTokenizer::AppendWordPieces(const std::string& word,
                                          std::vector<int32_t>& ids) const {
  const Codepoints chars = DecodeUtf8(word);
  if (chars.size() > kMaxCharsPerWord) {
    ids.push_back(unk_id_);
    return;
  }
  // Byte offset of each character boundary.
  std::vector<size_t> offsets = {0};
  for (utf8proc_int32_t cp : chars) {
    utf8proc_uint8_t buffer[4];
    offsets.push_back(offsets.back() +
                      static_cast<size_t>(utf8proc_encode_char(cp, buffer)));
  }
  std::vector<int32_t> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    int32_t found = -1;
    size_t end = chars.size();
    for (; end > start; --end) {
      std::string candidate =
          word.substr(offsets[start], offsets[end] - offsets[start]);
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

std::vector<int32_t> WordPieceTokenizer::Encode(absl::string_view text,
                                                int max_length) const {
  std::vector<int32_t> body;
  for (const TextPiece& piece : SplitOnSpecialTokens(text, split_tokens_)) {
    if (piece.special_id >= 0) {
      body.push_back(piece.special_id);
      continue;
    }
    for (const std::string& word : BasicTokenize(piece.text))
      AppendWordPieces(word, body);
  }
  const int limit = max_length > 0 ? max_length : spec_.max_length;
  const size_t max_body = limit > 2 ? static_cast<size_t>(limit) - 2 : 0;
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
