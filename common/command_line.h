#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace iblip {

// Parsed "iblip-client COMMAND [--flag value | --flag=value | --switch]...".
// Flag names keep their dashes (--max-new-tokens), the public CLI contract.
class CommandLine {
 public:
  // `switches`: flags that take no value (e.g. "json"). Every other flag
  // takes exactly one value; repeated flags accumulate.
  static absl::StatusOr<CommandLine> Parse(
      int argc, char** argv, const std::set<std::string>& switches);

  // The first positional argument ("" if none), and all positional arguments
  // after it (callers decide how many they accept).
  const std::string& command() const { return command_; }
  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  // The last value given for `name`.
  std::optional<std::string> Get(const std::string& name) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  // Flags that were given but are not in `known`.
  std::vector<std::string> Unknown(const std::set<std::string>& known) const;

  absl::StatusOr<std::optional<long long>> GetInt(
      const std::string& name) const;
  absl::StatusOr<std::optional<double>> GetDouble(
      const std::string& name) const;

 private:
  std::string command_;
  std::vector<std::string> positional_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace iblip
