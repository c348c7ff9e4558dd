#include "server/http/http_message.h"

#include "absl/strings/match.h"
#include "server/http/http_errors.h"

namespace iblip::server::http {

const std::string* HttpRequest::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return &value;
  }
  return nullptr;
}

HttpResponse JsonResponse(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "application/json";
  response.body = std::move(body);
  return response;
}

HttpResponse ErrorResponse(const absl::Status& status, int http_status) {
  if (http_status == 0) http_status = HttpStatusFor(status.code());
  return JsonResponse(http_status, ErrorJson(status, http_status));
}

}  // namespace iblip::server::http
