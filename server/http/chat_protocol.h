#pragma once

// The OpenAI chat-completions protocol, as far as InstructBLIP can honour it:
// parsing requests into iblip.v1 GenerateRequests, and formatting responses,
// stream chunks and errors. Pure (no I/O); unit-tested.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "iblip/v1/iblip.pb.h"
#include "server/engine/generation_request.h"
#include "server/http/bounded_json.h"
#include "server/http/http_errors.h"

namespace iblip::server::http {

// How a multi-turn conversation becomes the one prompt InstructBLIP takes.
enum class HistoryMode {
  // The last user message only (InstructBLIP is trained on single questions;
  // earlier turns mostly distract it). The default.
  kLatest,
  // "Question: q1 Answer: a1 Question: q2 Answer:" over every turn, the
  // template InstructBLIP's VQA training used.
  kTranscript,
};

// "latest" or "transcript": the names in the config, requests and
// /v1/models.
const char* HistoryModeName(HistoryMode mode);
std::optional<HistoryMode> HistoryModeFromName(absl::string_view name);

// The server's history setting (http.history, http.history_selectable).
struct HistoryPolicy {
  HistoryMode mode = HistoryMode::kLatest;  // when a request names none
  // Whether a request's "history" field may choose the other mode.
  bool selectable = false;
};

struct ChatRequest {
  v1::GenerateRequest generate;  // image, prompt, parameters
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
};

// Parses a POST /v1/chat/completions body. The image is the first image_url
// part of the conversation (the first user turn's, kept for every later
// turn); it must be a base64 data: URL, since the server fetches nothing,
// or "iblip:sha256:<hex>" naming an image sent before (Image.sha256).
// The prompt follows the body's "history" field ("latest" or "transcript")
// where `history` is selectable and the value is known, else 400 naming it;
// without the field, the server's mode.
// INVALID_ARGUMENT names the JSON field ("messages[1].content[0].image_url")
// and quotes at most ~200 bytes of the client's value. The body is released
// as soon as it is parsed (peak memory: about three times its size).
absl::StatusOr<ChatRequest> ParseChatRequest(std::string body,
                                             const HistoryPolicy& history,
                                             const JsonLimits& limits = {});

// What a finished choice reports.
struct ChoiceResult {
  std::string text;
  FinishReason finish_reason = FinishReason::kNone;
};

// "stop", "length" (OpenAI's names; a stop sequence is "stop").
std::string OpenAiFinishReason(FinishReason reason);

std::string CompletionJson(const std::string& id, int64_t created,
                           const std::string& model,
                           const std::vector<ChoiceResult>& choices,
                           const UsageStats& usage);
// One "data: {...}\n\n" server-sent event of a chat.completion.chunk. The
// first chunk of a choice carries the role; `finish_reason` kNone = null.
std::string ChunkEvent(const std::string& id, int64_t created,
                       const std::string& model, int index, bool first,
                       const std::string& text, FinishReason finish_reason);
// Replies end with "usage" and the server's "timings" (queue_ms,
// time_to_first_token_ms, decode_ms, total_ms, decode_tokens_per_second;
// null rate below two tokens).
std::string UsageEvent(const std::string& id, int64_t created,
                       const std::string& model, const UsageStats& usage);
// An error inside a stream: "data: {"error": {...}}\n\n".
std::string ErrorEvent(const absl::Status& status);
inline constexpr char kDoneEvent[] = "data: [DONE]\n\n";

// GET /v1/models. The model's entry also carries "iblip": its limits
// (max_new_tokens, max_context_tokens, ...), the default max_new_tokens, the
// default history mode and whether a request may choose it
// (history_selectable), so a client can show what will be sent and allowed.
std::string ModelsJson(const std::string& model, int64_t created,
                       const v1::ModelInfo& info, const HistoryPolicy& history);

// The pipeline's messages name iblip.v1 fields ("parameters.top_p: ...");
// this renames them to the request's OpenAI fields ("top_p: ...").
absl::Status ToOpenAiFieldNames(const absl::Status& status);

}  // namespace iblip::server::http
