#pragma once

// Errors as HTTP clients see them: OpenAI's error shape, the status code for
// an absl::Status, and client text made safe to quote.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iblip::server::http {

// The HTTP status for a status code: INVALID_ARGUMENT 400, UNAUTHENTICATED
// 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, ...
int HttpStatusFor(absl::StatusCode code);

// {"error": {"message", "type", "param", "code"}}. Never throws: invalid
// UTF-8 in the message becomes U+FFFD. `http_status` picks the type
// (0: HttpStatusFor(status.code())).
std::string ErrorJson(const absl::Status& status, int http_status = 0);

// At most ~200 bytes of a client's text, cut at a UTF-8 character boundary
// and marked "..." when cut: what error messages and logs may quote.
std::string ClientText(absl::string_view text);

}  // namespace iblip::server::http
