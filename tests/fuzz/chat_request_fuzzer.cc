// Fuzz target: an HTTP POST /v1/chat/completions body through the
// OpenAI-protocol parser, in both history modes. Errors must name a field.

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/http/chat_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (auto mode : {iblip::server::http::HistoryMode::kLatest,
                    iblip::server::http::HistoryMode::kTranscript}) {
    auto parsed = iblip::server::http::ParseChatRequest(body, mode);
    if (!parsed.ok() && parsed.status().message().empty()) __builtin_trap();
  }
  return 0;
}
