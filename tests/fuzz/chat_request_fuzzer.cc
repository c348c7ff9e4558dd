// Fuzz target: an HTTP POST /v1/chat/completions body through the
// OpenAI-protocol parser, in both history modes, a request's choice of mode
// allowed and not. Errors must name a field.

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/http/chat_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  using iblip::server::http::HistoryMode;
  using iblip::server::http::HistoryPolicy;
  for (const HistoryPolicy& policy :
       {HistoryPolicy{HistoryMode::kLatest, true},
        HistoryPolicy{HistoryMode::kTranscript, false}}) {
    auto parsed = iblip::server::http::ParseChatRequest(body, policy);
    if (!parsed.ok() && parsed.status().message().empty()) __builtin_trap();
  }
  return 0;
}
