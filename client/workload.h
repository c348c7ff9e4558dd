#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "iblip/v1/iblip.pb.h"

namespace iblip::client {

// Benchmark requests from a JSON-lines file, one request per line:
//   {"image": "cat.jpg", "prompt": "What is this?",
//    "parameters": {"max_new_tokens": 64, "temperature": 0.7},
//    "priority": "PRIORITY_HIGH"}
// "image" is a path (relative paths start at the file's folder); "parameters"
// is GenerationParameters in proto JSON form. Errors name the line and field.
absl::StatusOr<std::vector<v1::GenerateRequest>> LoadWorkload(
    const std::string& path);

// `count` requests on `image_bytes`: prompts cycle through a fixed list of
// questions, output lengths are uniform in [min_tokens, max_tokens] and
// exact (min_new_tokens = max_new_tokens), so every run does the same work
// for a seed.
std::vector<v1::GenerateRequest> GeneratedWorkload(
    const std::string& image_bytes, int count, int min_tokens, int max_tokens,
    uint64_t seed);

}  // namespace iblip::client
