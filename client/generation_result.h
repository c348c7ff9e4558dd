#pragma once

#include <map>
#include <string>
#include <vector>

#include "iblip/v1/iblip.pb.h"

namespace iblip::client {

// Accumulates a Generate stream into the final result the CLI prints.
class GenerationResult {
 public:
  void Add(const v1::GenerateResponse& message);
  // The same result from GenerateUnary.
  static GenerationResult FromUnary(const v1::GenerateUnaryResponse& response);

  // One JSON object on one line: request_id, token_ids, text,
  // finish_reason, usage (sequence 0), plus "sequences" when there are
  // several.
  std::string ToJson() const;

  struct Sequence {
    std::string text;
    std::vector<int32_t> token_ids;
    v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  };
  const std::map<uint32_t, Sequence>& sequences() const { return sequences_; }
  const v1::Usage& usage() const { return usage_; }

 private:
  std::string request_id_;
  std::map<uint32_t, Sequence> sequences_;
  v1::Usage usage_;
};

// "stop", "length", "stop_sequence", "cancelled", "error" ("" if unset).
std::string FinishReasonName(v1::FinishReason reason);

}  // namespace iblip::client
