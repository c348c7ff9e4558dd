#include "server/http/router.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"

namespace iblip::server::http {

bool Router::Route::Allows(absl::string_view method) const {
  for (const std::string& allowed : methods) {
    if (method == allowed || (method == "HEAD" && allowed == "GET"))
      return true;
  }
  return false;
}

std::string Router::Route::AllowHeader() const {
  std::vector<std::string> all;
  for (const std::string& method : methods) {
    all.push_back(method);
    if (method == "GET") all.push_back("HEAD");
  }
  all.push_back("OPTIONS");
  return absl::StrJoin(all, ", ");
}

void Router::Get(const std::string& path, Handler handler) {
  Add(path, "GET", std::move(handler));
}

void Router::Post(const std::string& path, Handler handler) {
  Add(path, "POST", std::move(handler));
}

void Router::Add(const std::string& path, const char* method, Handler handler) {
  Route& route = routes_[path];
  route.path = path;
  route.methods.push_back(method);
  if (!route.handler) {
    route.handler = std::move(handler);
    return;
  }
  // A second method on one path: each request goes to its method's handler.
  route.handler = [method = std::string(method), added = std::move(handler),
                   previous = std::move(route.handler)](HttpRequest& request) {
    const bool ours = request.method == method ||
                      (request.method == "HEAD" && method == "GET");
    return ours ? added(request) : previous(request);
  };
}

void Router::RequireKey(std::string prefix, const ApiKeyAuth* auth) {
  if (auth != nullptr)
    protected_prefixes_.emplace_back(std::move(prefix), auth);
}

void Router::AllowOrigins(std::vector<std::string> origins) {
  origins_ = std::move(origins);
}

const Router::Route* Router::Find(absl::string_view path) const {
  if (auto it = routes_.find(path); it != routes_.end()) return &it->second;
  const Route* best = nullptr;
  for (const auto& [pattern, route] : routes_) {
    if (!absl::EndsWith(pattern, "*")) continue;
    const absl::string_view prefix =
        absl::string_view(pattern).substr(0, pattern.size() - 1);
    if (absl::StartsWith(path, prefix) &&
        (best == nullptr || pattern.size() > best->path.size()))
      best = &route;
  }
  return best;
}

absl::Status Router::CheckKey(absl::string_view path,
                              absl::string_view authorization) const {
  for (const auto& [prefix, auth] : protected_prefixes_) {
    if (absl::StartsWith(path, prefix)) return auth->Check(authorization);
  }
  return absl::OkStatus();
}

std::string Router::AllowedOrigin(absl::string_view origin) const {
  if (origin.empty()) return "";
  for (const std::string& allowed : origins_) {
    if (allowed == "*") return "*";
    if (allowed == origin) return allowed;
  }
  return "";
}

}  // namespace iblip::server::http
