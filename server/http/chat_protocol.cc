#include "server/http/chat_protocol.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/http/bounded_json.h"
#include "server/http/http_errors.h"
#include "server/pipeline/request_validator.h"

namespace iblip::server::http {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& field, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// The image of a conversation: its bytes, or the SHA-256 of bytes this
// server was sent before.
struct ImagePart {
  std::string bytes;
  std::string sha256;
  bool empty() const { return bytes.empty() && sha256.empty(); }
};

constexpr absl::string_view kReferencePrefix = "iblip:sha256:";

// The image an image_url names: a data:[<mime>][;base64],<data> URL, or a
// reference "iblip:sha256:<hex>" to an image sent before.
absl::StatusOr<ImagePart> ReadImageUrl(absl::string_view url,
                                       const std::string& field) {
  if (absl::StartsWith(url, kReferencePrefix)) {
    ImagePart part;
    part.sha256 = std::string(url.substr(kReferencePrefix.size()));
    absl::Status checked = CheckImageReference(part.sha256, field);
    if (!checked.ok()) return checked;
    return part;
  }
  if (absl::StartsWith(url, "http://") || absl::StartsWith(url, "https://")) {
    return Invalid(field,
                   "the server fetches nothing; send the image inline as a "
                   "data: URL (data:image/png;base64,...)");
  }
  if (!absl::StartsWith(url, "data:"))
    return Invalid(field,
                   "must be a data: URL (data:image/png;base64,...) or "
                   "iblip:sha256:<hex>");
  const size_t comma = url.find(',');
  if (comma == std::string::npos)
    return Invalid(field, "malformed data: URL (no comma)");
  if (!absl::EndsWith(url.substr(0, comma), ";base64"))
    return Invalid(field, "the data: URL must be base64 (;base64,)");
  ImagePart part;
  if (!absl::Base64Unescape(url.substr(comma + 1), &part.bytes))
    return Invalid(field, "invalid base64 in the data: URL");
  return part;
}

struct Turn {
  std::string role;
  std::string text;
};

// Reads one message's content (a string, or an array of text and image_url
// parts); the first image found anywhere is kept in `image`.
absl::Status ReadContent(const json& content, const std::string& field,
                         Turn& turn, ImagePart& image) {
  if (content.is_string()) {
    turn.text = content.get_ref<const std::string&>();
    return absl::OkStatus();
  }
  if (!content.is_array())
    return Invalid(field, "must be a string or an array of parts");
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string where = absl::StrCat(field, "[", i, "]");
    if (!part.is_object() || !part.contains("type") ||
        !part["type"].is_string())
      return Invalid(where, "must be an object with a \"type\"");
    const std::string& type = part["type"].get_ref<const std::string&>();
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string())
        return Invalid(where + ".text", "must be a string");
      if (!turn.text.empty()) turn.text += "\n";
      turn.text += part["text"].get_ref<const std::string&>();
    } else if (type == "image_url") {
      const json* url = nullptr;
      if (part.contains("image_url")) {
        const json& image_url = part["image_url"];
        if (image_url.is_string()) url = &image_url;
        if (image_url.is_object() && image_url.contains("url"))
          url = &image_url["url"];
      }
      if (url == nullptr || !url->is_string())
        return Invalid(where + ".image_url", "needs a \"url\" string");
      auto read = ReadImageUrl(url->get_ref<const std::string&>(),
                               where + ".image_url");
      if (!read.ok()) return read.status();
      if (image.empty()) image = *std::move(read);
    } else {
      return Invalid(where + ".type",
                     "must be \"text\" or \"image_url\", got " +
                         DescribeJson(part["type"]));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<T> NumberField(const json& body, const char* name) {
  const json& value = body[name];
  if (!value.is_number())
    return Invalid(name,
                   absl::StrCat("must be a number, got ", DescribeJson(value)));
  if constexpr (std::is_integral_v<T>) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0)
      return Invalid(name, absl::StrCat("must be a non-negative integer, got ",
                                        DescribeJson(value)));
  }
  return value.get<T>();
}

// The mode the body's "history" field chooses, or the server's.
absl::StatusOr<HistoryMode> RequestedHistory(const json& body,
                                             const HistoryPolicy& policy) {
  if (!body.contains("history") || body["history"].is_null())
    return policy.mode;
  const json& value = body["history"];
  std::optional<HistoryMode> mode;
  if (value.is_string())
    mode = HistoryModeFromName(value.get_ref<const std::string&>());
  if (!mode.has_value())
    return Invalid("history",
                   "must be \"latest\" (the last user message only) or "
                   "\"transcript\" (every earlier turn too), got " +
                       DescribeJson(value));
  // Asking for what the server does anyway is honoured either way.
  if (*mode != policy.mode && !policy.selectable) {
    return Invalid(
        "history",
        absl::StrCat("this server ",
                     policy.mode == HistoryMode::kLatest
                         ? "sends only the latest user message"
                         : "always sends every earlier turn",
                     " (http.history: ", HistoryModeName(policy.mode),
                     ", http.history_selectable: false); leave the field out"));
  }
  return *mode;
}

std::string Prompt(const std::vector<Turn>& turns, HistoryMode history) {
  if (history == HistoryMode::kLatest) return turns.back().text;
  std::string prompt;
  for (const Turn& turn : turns) {
    if (turn.role == "user") {
      absl::StrAppend(&prompt, prompt.empty() ? "" : " ",
                      "Question: ", turn.text);
    } else if (turn.role == "assistant") {
      absl::StrAppend(&prompt, " Answer: ", turn.text);
    }
  }
  return absl::StrCat(prompt, " Answer:");
}

}  // namespace

const char* HistoryModeName(HistoryMode mode) {
  return mode == HistoryMode::kTranscript ? "transcript" : "latest";
}

std::optional<HistoryMode> HistoryModeFromName(absl::string_view name) {
  if (name == "latest") return HistoryMode::kLatest;
  if (name == "transcript") return HistoryMode::kTranscript;
  return std::nullopt;
}

absl::StatusOr<ChatRequest> ParseChatRequest(std::string body_text,
                                             const HistoryPolicy& history,
                                             const JsonLimits& limits) {
  absl::StatusOr<json> parsed = ParseBoundedJson(body_text, limits, "body");
  if (!parsed.ok()) return parsed.status();
  std::string().swap(body_text);  // the document holds what is needed now
  const json body = *std::move(parsed);
  if (!body.is_object()) return Invalid("body", "must be a JSON object");
  if (!body.contains("messages") || !body["messages"].is_array() ||
      body["messages"].empty())
    return Invalid("messages", "must be a non-empty array");

  ChatRequest chat;
  ImagePart image;
  std::vector<Turn> turns;
  const json& messages = body["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const json& message = messages[i];
    if (!message.is_object() || !message.contains("role") ||
        !message["role"].is_string())
      return Invalid(field + ".role", "must be a string");
    Turn turn;
    turn.role = message["role"].get_ref<const std::string&>();
    if (turn.role != "user" && turn.role != "assistant" &&
        turn.role != "system" && turn.role != "developer")
      return Invalid(field + ".role",
                     "must be user, assistant, system or developer, got " +
                         DescribeJson(message["role"]));
    if (message.contains("content") && !message["content"].is_null()) {
      absl::Status read =
          ReadContent(message["content"], field + ".content", turn, image);
      if (!read.ok()) return read;
    }
    // System instructions have no place in InstructBLIP's prompt.
    if (turn.role == "user" || turn.role == "assistant")
      turns.push_back(std::move(turn));
  }
  if (turns.empty() || turns.back().role != "user")
    return Invalid("messages", "the last message must be from the user");
  if (image.empty())
    return Invalid("messages",
                   "no image: InstructBLIP answers about an image; add an "
                   "image_url part (a data: URL) to a user message");
  if (image.sha256.empty()) {
    chat.generate.add_images()->set_data(std::move(image.bytes));
  } else {
    chat.generate.add_images()->set_sha256(std::move(image.sha256));
  }
  absl::StatusOr<HistoryMode> mode = RequestedHistory(body, history);
  if (!mode.ok()) return mode.status();
  chat.generate.set_prompt(Prompt(turns, *mode));

  v1::GenerationParameters& p = *chat.generate.mutable_parameters();
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    auto t = NumberField<float>(body, "temperature");
    if (!t.ok()) return t.status();
    p.set_temperature(*t);
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    auto v = NumberField<float>(body, "top_p");
    if (!v.ok()) return v.status();
    p.set_top_p(*v);
  }
  for (const char* name : {"max_completion_tokens", "max_tokens"}) {
    if (body.contains(name) && !body[name].is_null()) {
      auto v = NumberField<int64_t>(body, name);
      if (!v.ok()) return v.status();
      p.set_max_new_tokens(
          static_cast<uint32_t>(std::min<int64_t>(*v, 1 << 30)));
      break;
    }
  }
  // vLLM's extension, for clients that need an exact length.
  if (body.contains("min_tokens") && !body["min_tokens"].is_null()) {
    auto v = NumberField<int64_t>(body, "min_tokens");
    if (!v.ok()) return v.status();
    p.set_min_new_tokens(static_cast<uint32_t>(std::min<int64_t>(*v, 1 << 30)));
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    auto v = NumberField<int64_t>(body, "seed");
    if (!v.ok()) return v.status();
    p.set_seed(static_cast<uint64_t>(*v));
  }
  if (body.contains("n") && !body["n"].is_null()) {
    auto v = NumberField<int64_t>(body, "n");
    if (!v.ok()) return v.status();
    chat.n = static_cast<int>(std::min<int64_t>(*v, 1 << 20));
    p.set_num_return_sequences(static_cast<uint32_t>(chat.n));
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      p.add_stop_sequences(stop.get_ref<const std::string&>());
    } else if (stop.is_array()) {
      for (const json& s : stop) {
        if (!s.is_string())
          return Invalid("stop", "must be a string or an array of strings");
        p.add_stop_sequences(s.get_ref<const std::string&>());
      }
    } else {
      return Invalid("stop", "must be a string or an array of strings");
    }
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean())
      return Invalid("stream", "must be true or false");
    chat.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& options = body["stream_options"];
    if (!options.is_object())
      return Invalid("stream_options", "must be an object");
    if (options.contains("include_usage") &&
        !options["include_usage"].is_null()) {
      if (!options["include_usage"].is_boolean())
        return Invalid("stream_options.include_usage",
                       absl::StrCat("must be true or false, got ",
                                    DescribeJson(options["include_usage"])));
      chat.include_usage = options["include_usage"].get<bool>();
    }
  }
  return chat;
}

std::string OpenAiFinishReason(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

namespace {

double Milliseconds(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// The server's own clock, so clients need not guess rates from chunk
// arrival (a chunk can hold several tokens). Decode rate: the tokens after
// the first over the time after the first.
json TimingsObject(const UsageStats& usage) {
  const absl::Duration decode = usage.total_time - usage.time_to_first_token;
  json timings = {
      {"queue_ms", Milliseconds(usage.queue_time)},
      {"time_to_first_token_ms", Milliseconds(usage.time_to_first_token)},
      {"decode_ms", Milliseconds(decode)},
      {"total_ms", Milliseconds(usage.total_time)},
      {"decode_tokens_per_second", nullptr}};
  if (usage.generated_tokens > 1 && decode > absl::ZeroDuration()) {
    timings["decode_tokens_per_second"] =
        (usage.generated_tokens - 1) / absl::ToDoubleSeconds(decode);
  }
  return timings;
}

json UsageObject(const UsageStats& usage) {
  return {{"prompt_tokens", usage.prompt_tokens + usage.image_tokens},
          {"completion_tokens", usage.generated_tokens},
          {"total_tokens",
           usage.prompt_tokens + usage.image_tokens + usage.generated_tokens}};
}

json Envelope(const std::string& id, int64_t created, const std::string& model,
              const char* object) {
  return {
      {"id", id}, {"object", object}, {"created", created}, {"model", model}};
}

std::string Event(const json& payload) {
  return absl::StrCat("data: ", DumpJson(payload), "\n\n");
}

}  // namespace

std::string CompletionJson(const std::string& id, int64_t created,
                           const std::string& model,
                           const std::vector<ChoiceResult>& choices,
                           const UsageStats& usage) {
  json body = Envelope(id, created, model, "chat.completion");
  body["choices"] = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    body["choices"].push_back(
        {{"index", i},
         {"message", {{"role", "assistant"}, {"content", choices[i].text}}},
         {"finish_reason", OpenAiFinishReason(choices[i].finish_reason)}});
  }
  body["usage"] = UsageObject(usage);
  body["timings"] = TimingsObject(usage);
  return DumpJson(body);
}

std::string ChunkEvent(const std::string& id, int64_t created,
                       const std::string& model, int index, bool first,
                       const std::string& text, FinishReason finish_reason) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!text.empty()) delta["content"] = text;
  json chunk = Envelope(id, created, model, "chat.completion.chunk");
  chunk["choices"] = json::array(
      {{{"index", index},
        {"delta", delta},
        {"finish_reason", finish_reason == FinishReason::kNone
                              ? json(nullptr)
                              : json(OpenAiFinishReason(finish_reason))}}});
  return Event(chunk);
}

std::string UsageEvent(const std::string& id, int64_t created,
                       const std::string& model, const UsageStats& usage) {
  json chunk = Envelope(id, created, model, "chat.completion.chunk");
  chunk["choices"] = json::array();
  chunk["usage"] = UsageObject(usage);
  chunk["timings"] = TimingsObject(usage);
  return Event(chunk);
}

std::string ModelsJson(const std::string& model, int64_t created,
                       const v1::ModelInfo& info,
                       const HistoryPolicy& history) {
  const v1::Limits& limits = info.limits();
  json card = {
      {"history", HistoryModeName(history.mode)},
      {"history_selectable", history.selectable},
      {"max_new_tokens", limits.max_new_tokens()},
      {"default_max_new_tokens", info.default_parameters().max_new_tokens()},
      {"max_context_tokens", limits.max_context_tokens()},
      {"max_image_bytes", limits.max_image_bytes()},
      {"max_image_pixels", limits.max_image_pixels()},
      {"image_formats", info.accepted_image_formats()}};
  return DumpJson(json{{"object", "list"},
                       {"data", json::array({{{"id", model},
                                              {"object", "model"},
                                              {"created", created},
                                              {"owned_by", "iblip"},
                                              {"iblip", card}}})}});
}

absl::Status ToOpenAiFieldNames(const absl::Status& status) {
  static const std::pair<const char*, const char*> kRenames[] = {
      {"parameters.max_new_tokens", "max_tokens"},
      {"parameters.min_new_tokens", "min_tokens"},
      {"parameters.num_return_sequences", "n"},
      {"parameters.stop_sequences", "stop"},
      {"parameters.temperature", "temperature"},
      {"parameters.top_p", "top_p"},
      {"parameters.seed", "seed"},
      {"images[0].data", "messages (image_url)"},
      {"images[0].sha256", "messages (image_url iblip:sha256)"},
      {"prompt", "messages"},
  };
  const absl::string_view message = status.message();
  for (const auto& [from, to] : kRenames) {
    if (absl::StartsWith(message, from)) {
      return absl::Status(status.code(),
                          absl::StrCat(to, message.substr(strlen(from))));
    }
  }
  return status;
}

std::string ErrorEvent(const absl::Status& status) {
  return absl::StrCat("data: ", ErrorJson(status), "\n\n");
}

}  // namespace iblip::server::http
