#pragma once

#include <string>

namespace iblip::server::http {

// /favicon.ico: a 16x16 icon (a filled circle), drawn at startup rather
// than kept as a binary file. Browsers ask for it on every page load.
const std::string& FaviconIco();

}  // namespace iblip::server::http
