#include "common/command_line.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace iblip {

absl::StatusOr<CommandLine> CommandLine::Parse(
    int argc, char** argv, const std::set<std::string>& switches) {
  CommandLine line;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      if (line.command_.empty()) {
        line.command_ = arg;
      } else {
        line.positional_.push_back(arg);
      }
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (switches.count(name) != 0) {
      value = "true";
    } else {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    line.values_[name].push_back(value);
  }
  return line;
}

std::optional<std::string> CommandLine::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> CommandLine::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::vector<std::string> CommandLine::Unknown(
    const std::set<std::string>& known) const {
  std::vector<std::string> unknown;
  for (const auto& [name, values] : values_) {
    if (known.count(name) == 0) unknown.push_back(name);
  }
  return unknown;
}

absl::StatusOr<std::optional<long long>> CommandLine::GetInt(
    const std::string& name) const {
  auto text = Get(name);
  if (!text) return std::optional<long long>();
  long long value;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", *text, "' is not an integer"));
  }
  return std::optional<long long>(value);
}

absl::StatusOr<std::optional<double>> CommandLine::GetDouble(
    const std::string& name) const {
  auto text = Get(name);
  if (!text) return std::optional<double>();
  double value;
  if (!absl::SimpleAtod(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", *text, "' is not a number"));
  }
  return std::optional<double>(value);
}

}  // namespace iblip
