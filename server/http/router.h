#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/api_key_auth.h"
#include "server/http/http_message.h"

namespace iblip::server::http {

// A listener's routes and the policies the connection applies from the
// request header alone, before any body byte is read: which paths need an
// API key and which browser origins may call (CORS). Built once at startup,
// then read-only (shared by every connection thread).
//
// Adding an endpoint is one call:
//   router.Post("/v1/chat/completions", handler);
//   router.Get("/v1/files/*", handler);  // trailing *: any path below
class Router {
 public:
  struct Route {
    std::string path;                  // as registered: the metrics label
    std::vector<std::string> methods;  // GET also answers HEAD
    Handler handler;

    bool Allows(absl::string_view method) const;
    // The Allow header: "GET, HEAD, OPTIONS".
    std::string AllowHeader() const;
  };

  // GET (and HEAD: the same response, without its body).
  void Get(const std::string& path, Handler handler);
  void Post(const std::string& path, Handler handler);

  // Paths starting with `prefix` need "authorization: Bearer KEY" with a key
  // `auth` knows. Without a call, or with a null `auth`, nothing does.
  void RequireKey(std::string prefix, const ApiKeyAuth* auth);
  // Browser origins ("https://chat.example.com"; "*" = any) whose pages may
  // call these routes: their requests get Access-Control-Allow-Origin and
  // their preflight OPTIONS requests an answer.
  void AllowOrigins(std::vector<std::string> origins);

  // The route for `path`: an exact match, else the longest "prefix*" one.
  const Route* Find(absl::string_view path) const;
  // OK, or UNAUTHENTICATED when `path` needs a key and `authorization`
  // (the header's value) does not carry a valid one.
  absl::Status CheckKey(absl::string_view path,
                        absl::string_view authorization) const;
  // The Access-Control-Allow-Origin value for a request from `origin`, or
  // "" when that origin is not allowed.
  std::string AllowedOrigin(absl::string_view origin) const;

 private:
  void Add(const std::string& path, const char* method, Handler handler);

  std::map<std::string, Route, std::less<>> routes_;
  std::vector<std::pair<std::string, const ApiKeyAuth*>> protected_prefixes_;
  std::vector<std::string> origins_;
};

}  // namespace iblip::server::http
