#include "client/workload.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace iblip::client {
namespace fs = std::filesystem;

absl::StatusOr<std::vector<v1::GenerateRequest>> LoadWorkload(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const fs::path base = fs::path(path).parent_path();
  std::map<std::string, std::string> images;  // path -> bytes, read once
  std::vector<v1::GenerateRequest> requests;
  std::string text;
  for (int number = 1; std::getline(in, text); ++number) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = absl::StrCat(path, ":", number, ": ");
    nlohmann::json line = nlohmann::json::parse(text, nullptr, false);
    if (line.is_discarded() || !line.is_object())
      return absl::InvalidArgumentError(where + "not a JSON object");
    if (!line.contains("image") || !line["image"].is_string())
      return absl::InvalidArgumentError(where +
                                        "\"image\" (a path) is missing");
    fs::path image = line["image"].get<std::string>();
    if (image.is_relative()) image = base / image;
    auto [it, inserted] = images.try_emplace(image.string());
    if (inserted) {
      std::ifstream file(image, std::ios::binary);
      if (!file)
        return absl::NotFoundError(
            absl::StrCat(where, "cannot read image ", image.string()));
      std::stringstream bytes;
      bytes << file.rdbuf();
      it->second = bytes.str();
    }
    v1::GenerateRequest request;
    request.add_images()->set_data(it->second);
    if (line.contains("prompt")) {
      if (!line["prompt"].is_string())
        return absl::InvalidArgumentError(where + "\"prompt\" is not a string");
      request.set_prompt(line["prompt"].get<std::string>());
    }
    if (line.contains("parameters")) {
      auto status = google::protobuf::util::JsonStringToMessage(
          line["parameters"].dump(), request.mutable_parameters());
      if (!status.ok())
        return absl::InvalidArgumentError(absl::StrCat(
            where, "\"parameters\": ", std::string(status.message())));
    }
    if (line.contains("priority")) {
      v1::Priority priority;
      if (!line["priority"].is_string() ||
          !v1::Priority_Parse(line["priority"].get<std::string>(), &priority))
        return absl::InvalidArgumentError(
            where + "\"priority\" must be PRIORITY_LOW, _NORMAL or _HIGH");
      request.set_priority(priority);
    }
    requests.push_back(std::move(request));
  }
  if (requests.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": no requests"));
  return requests;
}

std::vector<v1::GenerateRequest> GeneratedWorkload(
    const std::string& image_bytes, int count, int min_tokens, int max_tokens,
    uint64_t seed) {
  static const char* const kQuestions[] = {
      "Describe the image.", "What is in the picture?",
      "What color is the largest object?", "How many objects are there?",
      "Write a short caption."};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> length(min_tokens, max_tokens);
  std::vector<v1::GenerateRequest> requests(count);
  for (int i = 0; i < count; ++i) {
    v1::GenerateRequest& request = requests[i];
    request.add_images()->set_data(image_bytes);
    request.set_prompt(kQuestions[i % 5]);
    const int tokens = length(rng);
    request.mutable_parameters()->set_max_new_tokens(tokens);
    request.mutable_parameters()->set_min_new_tokens(tokens);
  }
  return requests;
}

}  // namespace iblip::client
