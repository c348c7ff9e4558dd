#include "server/http/http_errors.h"

#include "absl/strings/ascii.h"
#include "server/http/bounded_json.h"

namespace iblip::server::http {
namespace {

constexpr size_t kMaxQuotedBytes = 200;

const char* ErrorType(int http_status) {
  switch (http_status) {
    case 400:
    case 405:
    case 411:
    case 413:
    case 414:
    case 417:
    case 431:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    default:
      return http_status < 500 ? "invalid_request_error" : "server_error";
  }
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& status, int http_status) {
  if (http_status == 0) http_status = HttpStatusFor(status.code());
  const std::string message(status.message());
  // Our messages start with the field they are about ("top_p: must be ...").
  const size_t colon = message.find(": ");
  nlohmann::json param = nullptr;
  if (http_status == 400 && colon != std::string::npos &&
      message.find(' ') > colon)
    param = message.substr(0, colon);
  return DumpJson({{"error",
                    {{"message", message},
                     {"type", ErrorType(http_status)},
                     {"param", param},
                     {"code", absl::AsciiStrToLower(
                                  absl::StatusCodeToString(status.code()))}}}});
}

std::string ClientText(absl::string_view text) {
  if (text.size() <= kMaxQuotedBytes) return std::string(text);
  size_t cut = kMaxQuotedBytes;
  // Back up over UTF-8 continuation bytes (10xxxxxx) to a character start.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  return std::string(text.substr(0, cut)) + "...";
}

}  // namespace iblip::server::http
