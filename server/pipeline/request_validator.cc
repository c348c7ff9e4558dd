#include "server/pipeline/request_validator.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace iblip::server {
namespace {

constexpr size_t kMaxRequestIdBytes = 128;
constexpr float kMaxTemperature = 100.0f;
constexpr float kMaxRepetitionPenalty = 10.0f;
constexpr float kMaxAbsLengthPenalty = 10.0f;

template <typename T>
absl::Status Invalid(absl::string_view field, absl::string_view rule,
                     const T& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", rule, ", got ", got));
}

absl::Status CheckParameters(const v1::GenerationParameters& p,
                             const ServingLimits& limits) {
  if (p.has_max_new_tokens() &&
      (p.max_new_tokens() < 1 || p.max_new_tokens() > limits.max_new_tokens)) {
    return Invalid("parameters.max_new_tokens",
                   absl::StrCat("must be in [1, ", limits.max_new_tokens, "]"),
                   p.max_new_tokens());
  }
  if (p.has_temperature() &&
      !(p.temperature() >= 0 && p.temperature() <= kMaxTemperature)) {
    return Invalid("parameters.temperature",
                   absl::StrCat("must be in [0, ", kMaxTemperature, "]"),
                   p.temperature());
  }
  if (p.has_top_k() && p.top_k() > limits.lm_vocab_size) {
    return Invalid("parameters.top_k",
                   absl::StrCat("must be in [0, ", limits.lm_vocab_size,
                                "] (vocabulary size)"),
                   p.top_k());
  }
  if (p.has_top_p() && !(p.top_p() > 0 && p.top_p() <= 1)) {
    return Invalid("parameters.top_p", "must be in (0, 1]", p.top_p());
  }
  if (p.has_repetition_penalty() &&
      !(p.repetition_penalty() > 0 &&
        p.repetition_penalty() <= kMaxRepetitionPenalty)) {
    return Invalid("parameters.repetition_penalty",
                   absl::StrCat("must be in (0, ", kMaxRepetitionPenalty, "]"),
                   p.repetition_penalty());
  }
  if (p.has_length_penalty() &&
      !(std::fabs(p.length_penalty()) <= kMaxAbsLengthPenalty)) {
    return Invalid("parameters.length_penalty",
                   absl::StrCat("must be in [-", kMaxAbsLengthPenalty, ", ",
                                kMaxAbsLengthPenalty, "]"),
                   p.length_penalty());
  }
  if (p.has_num_beams() &&
      (p.num_beams() < 1 || p.num_beams() > limits.max_num_beams)) {
    return Invalid("parameters.num_beams",
                   absl::StrCat("must be in [1, ", limits.max_num_beams, "]"),
                   p.num_beams());
  }
  if (p.stop_sequences_size() > static_cast<int>(limits.max_stop_sequences)) {
    return Invalid(
        "parameters.stop_sequences",
        absl::StrCat("at most ", limits.max_stop_sequences, " are allowed"),
        p.stop_sequences_size());
  }
  for (int i = 0; i < p.stop_sequences_size(); ++i) {
    const std::string& stop = p.stop_sequences(i);
    const std::string field =
        absl::StrCat("parameters.stop_sequences[", i, "]");
    if (stop.empty() || stop.size() > limits.max_stop_sequence_bytes) {
      return Invalid(field,
                     absl::StrCat("must be 1 to ",
                                  limits.max_stop_sequence_bytes, " bytes"),
                     stop.size());
    }
    if (!IsValidUtf8(stop)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Priority> ToPriority(v1::Priority priority) {
  switch (priority) {
    case v1::PRIORITY_UNSPECIFIED:
    case v1::PRIORITY_NORMAL:
      return Priority::kNormal;
    case v1::PRIORITY_LOW:
      return Priority::kLow;
    case v1::PRIORITY_HIGH:
      return Priority::kHigh;
    default:
      return Invalid(
          "priority",
          "must be one of PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH",
          static_cast<int>(priority));
  }
}

absl::Status CheckRequestId(const std::string& id) {
  if (id.size() > kMaxRequestIdBytes) {
    return Invalid(
        "request_id",
        absl::StrCat("must be at most ", kMaxRequestIdBytes, " bytes"),
        id.size());
  }
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7E) {
      return absl::InvalidArgumentError(
          "request_id: must be printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

}  // namespace

v1::GenerationParameters DefaultParameters(const ServingLimits& limits) {
  v1::GenerationParameters p;
  p.set_max_new_tokens(limits.default_max_new_tokens);
  p.set_min_new_tokens(0);
  p.set_temperature(0.0f);
  p.set_top_k(50);
  p.set_top_p(1.0f);
  p.set_repetition_penalty(1.0f);
  p.set_length_penalty(1.0f);
  p.set_num_beams(1);
  p.set_num_return_sequences(1);
  p.set_early_stopping(false);
  return p;
}

absl::Status CheckImageReference(const std::string& sha256,
                                 const std::string& field) {
  const bool well_formed =
      sha256.size() == 64 &&
      std::all_of(sha256.begin(), sha256.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      });
  if (well_formed) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      field,
      ": must be the image's SHA-256 as 64 lowercase hex characters, got ",
      sha256.size(), " bytes"));
}

absl::StatusOr<ValidatedRequest> ValidateGenerateRequest(
    const v1::GenerateRequest& request, const ServingLimits& limits,
    uint64_t random_seed) {
  if (request.images_size() == 0) {
    return absl::InvalidArgumentError("images: one image is required");
  }
  if (request.images_size() > static_cast<int>(limits.max_images_per_request)) {
    return Invalid(
        "images",
        absl::StrCat("at most ", limits.max_images_per_request, " per request"),
        request.images_size());
  }
  for (int i = 0; i < request.images_size(); ++i) {
    if (request.images(i).source_case() == v1::Image::kSha256) {
      RETURN_IF_ERROR(CheckImageReference(
          request.images(i).sha256(), absl::StrCat("images[", i, "].sha256")));
      continue;
    }
    const std::string field = absl::StrCat("images[", i, "].data");
    const std::string& data = request.images(i).data();
    if (data.empty())
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": image is empty"));
    if (data.size() > limits.max_image_bytes) {
      return Invalid(
          field,
          absl::StrCat("must be at most ", limits.max_image_bytes, " bytes"),
          data.size());
    }
  }
  if (request.prompt().size() > limits.max_prompt_bytes) {
    return Invalid(
        "prompt",
        absl::StrCat("must be at most ", limits.max_prompt_bytes, " bytes"),
        request.prompt().size());
  }
  if (!IsValidUtf8(request.prompt())) {
    return absl::InvalidArgumentError("prompt: is not valid UTF-8");
  }
  RETURN_IF_ERROR(CheckRequestId(request.request_id()));
  ValidatedRequest out;
  out.request_id = request.request_id();
  ASSIGN_OR_RETURN(out.priority, ToPriority(request.priority()));

  const v1::GenerationParameters& p = request.parameters();
  RETURN_IF_ERROR(CheckParameters(p, limits));
  v1::GenerationParameters merged = DefaultParameters(limits);
  merged.MergeFrom(p);  // set fields override defaults

  GenerationSettings& s = out.settings;
  s.max_new_tokens = static_cast<int>(merged.max_new_tokens());
  s.num_beams = static_cast<int>(merged.num_beams());
  s.num_return_sequences = static_cast<int>(merged.num_return_sequences());
  s.length_penalty = merged.length_penalty();
  s.early_stopping = merged.early_stopping();
  s.stop_sequences.assign(merged.stop_sequences().begin(),
                          merged.stop_sequences().end());
  s.seed = p.has_seed() ? p.seed() : random_seed;
  s.sampling.temperature = merged.temperature();
  s.sampling.top_k = static_cast<int>(merged.top_k());
  s.sampling.top_p = merged.top_p();
  s.sampling.repetition_penalty = merged.repetition_penalty();
  s.sampling.min_new_tokens = static_cast<int>(merged.min_new_tokens());

  if (s.sampling.min_new_tokens > s.max_new_tokens) {
    return Invalid(
        "parameters.min_new_tokens",
        absl::StrCat("must be <= max_new_tokens (", s.max_new_tokens, ")"),
        s.sampling.min_new_tokens);
  }
  const bool sampling = s.sampling.temperature > 0;
  if (s.num_beams > 1 && sampling) {
    return absl::InvalidArgumentError(
        "parameters.num_beams: beam search requires temperature 0 (beam "
        "sampling is not offered)");
  }
  const uint32_t max_sequences = std::max<uint32_t>(
      static_cast<uint32_t>(s.num_beams), limits.max_return_sequences);
  if (s.num_return_sequences < 1 ||
      static_cast<uint32_t>(s.num_return_sequences) > max_sequences) {
    return Invalid("parameters.num_return_sequences",
                   absl::StrCat("must be in [1, ", max_sequences, "]"),
                   s.num_return_sequences);
  }
  if (s.num_beams > 1 && s.num_return_sequences > s.num_beams) {
    return Invalid("parameters.num_return_sequences",
                   absl::StrCat("must be <= num_beams (", s.num_beams, ")"),
                   s.num_return_sequences);
  }
  if (!sampling && s.num_beams == 1 && s.num_return_sequences > 1) {
    return Invalid(
        "parameters.num_return_sequences",
        "must be 1 for greedy decoding (set temperature > 0 or num_beams > 1)",
        s.num_return_sequences);
  }
  return out;
}

absl::Status ValidateTokenBudget(size_t prompt_tokens, int image_tokens,
                                 const GenerationSettings& settings,
                                 const ServingLimits& limits) {
  if (prompt_tokens > limits.max_prompt_tokens) {
    return Invalid(
        "prompt",
        absl::StrCat("must be at most ", limits.max_prompt_tokens, " tokens"),
        prompt_tokens);
  }
  const size_t needed = prompt_tokens + image_tokens + settings.max_new_tokens;
  if (needed > limits.max_context_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parameters.max_new_tokens: ", image_tokens, " image positions + ",
        prompt_tokens, " prompt tokens + ", settings.max_new_tokens,
        " new tokens = ", needed, " exceeds the model's context of ",
        limits.max_context_tokens, " tokens"));
  }
  return absl::OkStatus();
}

bool IsValidUtf8(absl::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

}  // namespace iblip::server
