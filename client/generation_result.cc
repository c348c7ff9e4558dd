#include "client/generation_result.h"

#include "nlohmann/json.hpp"

namespace iblip::client {
namespace {

using nlohmann::json;

json UsageJson(const v1::Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens()},
              {"image_tokens", u.image_tokens()},
              {"generated_tokens", u.generated_tokens()},
              {"queue_time_us", u.queue_time_us()},
              {"time_to_first_token_us", u.time_to_first_token_us()},
              {"total_time_us", u.total_time_us()},
              {"seed", u.seed()}};
}

}  // namespace

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP_SEQUENCE:
      return "stop_sequence";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "";
  }
}

void GenerationResult::Add(const v1::GenerateResponse& message) {
  request_id_ = message.request_id();
  if (message.has_usage()) {
    usage_ = message.usage();
    return;
  }
  Sequence& sequence = sequences_[message.index()];
  sequence.text += message.text();
  sequence.token_ids.insert(sequence.token_ids.end(),
                            message.token_ids().begin(),
                            message.token_ids().end());
  if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    sequence.finish_reason = message.finish_reason();
  }
}

GenerationResult GenerationResult::FromUnary(
    const v1::GenerateUnaryResponse& response) {
  GenerationResult result;
  result.request_id_ = response.request_id();
  result.usage_ = response.usage();
  for (int i = 0; i < response.sequences_size(); ++i) {
    const v1::Sequence& s = response.sequences(i);
    Sequence& sequence = result.sequences_[static_cast<uint32_t>(i)];
    sequence.text = s.text();
    sequence.token_ids.assign(s.token_ids().begin(), s.token_ids().end());
    sequence.finish_reason = s.finish_reason();
  }
  return result;
}

std::string GenerationResult::ToJson() const {
  auto sequence_json = [](const Sequence& s) {
    return json{{"token_ids", s.token_ids},
                {"text", s.text},
                {"finish_reason", FinishReasonName(s.finish_reason)}};
  };
  json out = sequences_.count(0) ? sequence_json(sequences_.at(0))
                                 : sequence_json(Sequence{});
  out["request_id"] = request_id_;
  out["usage"] = UsageJson(usage_);
  if (sequences_.size() > 1) {
    json all = json::array();
    for (const auto& [index, s] : sequences_) {
      json item = sequence_json(s);
      item["index"] = index;
      all.push_back(std::move(item));
    }
    out["sequences"] = std::move(all);
  }
  // Invalid UTF-8 cannot occur (the server sends whole characters), but never
  // let the JSON writer throw on it.
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace iblip::client
