#pragma once

#include <string>
#include <string_view>

namespace iblip::server::http {

// The web chat page and anything else served as a file, compiled into the
// binary (server/http/static/; no build step, no CDN, nothing to install).
struct StaticFile {
  const char* content_type;
  std::string_view content;
};

// The file for a URL path ("/" is the chat page), or null.
const StaticFile* FindStaticFile(const std::string& path);

}  // namespace iblip::server::http
