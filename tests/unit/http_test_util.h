#pragma once

// Helpers for the HTTP tests: parse what a server wrote (with Beast's
// response parser, so a malformed response fails the test) and build
// requests.

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace iblip::server::http::testing {

struct ParsedResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// Every response in `bytes`, in order; `head` for answers to HEAD requests
// (they have no body whatever their Content-Length says). A trailing
// incomplete response is dropped and `complete` set false.
inline std::vector<ParsedResponse> ParseResponses(std::string bytes,
                                                  bool head = false,
                                                  bool* complete = nullptr) {
  namespace bhttp = boost::beast::http;
  std::vector<ParsedResponse> responses;
  if (complete) *complete = true;
  while (!bytes.empty()) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(1ull << 32);
    parser.skip(head);
    boost::system::error_code ec;
    size_t used = 0;
    while (!parser.is_done()) {
      const size_t n = parser.put(
          boost::asio::buffer(bytes.data() + used, bytes.size() - used), ec);
      used += n;
      if (ec == bhttp::error::need_more && used < bytes.size()) continue;
      if (ec == bhttp::error::need_more && !parser.is_header_done()) break;
      if (ec == bhttp::error::need_more) {
        // A body delimited by the connection's end.
        parser.put_eof(ec);
        break;
      }
      if (ec) break;
    }
    if (!parser.is_done()) {
      if (complete) *complete = false;
      break;
    }
    ParsedResponse response;
    response.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get()) {
      response.headers[absl::AsciiStrToLower(std::string(
          field.name_string().data(), field.name_string().size()))] =
          std::string(field.value().data(), field.value().size());
    }
    response.body = parser.get().body();
    responses.push_back(std::move(response));
    bytes.erase(0, used);
  }
  return responses;
}

inline std::string Request(const std::string& method, const std::string& target,
                           const std::string& body = "",
                           const std::string& extra_headers = "") {
  std::string request = absl::StrCat(
      method, " ", target, " HTTP/1.1\r\nHost: test\r\n", extra_headers);
  if (!body.empty() || method == "POST")
    absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n");
  absl::StrAppend(&request, "\r\n", body);
  return request;
}

inline std::string ChatBody(const std::string& extra_fields = "",
                            const std::string& prompt = "what is it?") {
  return absl::StrCat(
      R"({"messages": [{"role": "user", "content": [)",
      R"({"type": "image_url", "image_url": {"url": "data:image/png;base64,)",
      absl::Base64Escape("PNG-BYTES"), R"("}}, {"type": "text", "text": ")",
      prompt, R"("}]}])", extra_fields, "}");
}

}  // namespace iblip::server::http::testing
