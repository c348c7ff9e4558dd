// Fuzz target: one HTTP connection's raw bytes (any number of pipelined
// requests, any bytes at all) through the server's request handling:
// Beast's parser with our limits, the header checks (URL, Expect, CORS, API
// key), routing, the OpenAI chat API over a fake engine, responses and
// event streams. What comes back must be HTTP responses with JSON errors.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "server/http/api_routes.h"
#include "server/http/exchange.h"
#include "tests/unit/fake_chat_backend.h"
#include "tests/unit/http_test_util.h"

namespace {

using namespace iblip::server::http;  // NOLINT: a fuzz target

struct Setup {
  Setup() {
    limits.max_header_bytes = 2048;
    limits.max_url_bytes = 1024;
    limits.max_body_bytes = 256 * 1024;
  }
  FakeApi api{"fuzz-key", JsonLimits{/*max_depth=*/16, /*max_elements=*/512}};
  HttpLimits limits;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Setup* setup = new Setup();
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string out = ServeRawRequests(
      bytes, setup->api.router, setup->limits, absl::Milliseconds(100));
  if (out.empty()) return 0;
  if (!absl::StartsWith(out, "HTTP/1.")) __builtin_trap();
  // HEAD answers have a length but no body: only whole-message checks then.
  if (bytes.find("HEAD") != std::string::npos) return 0;
  bool complete = false;
  const auto responses = testing::ParseResponses(out, false, &complete);
  if (responses.empty() || !complete) __builtin_trap();
  for (const auto& response : responses) {
    if (response.status >= 400 && !nlohmann::json::accept(response.body))
      __builtin_trap();
  }
  return 0;
}
