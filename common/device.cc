#include "common/device.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace iblip {

std::string DeviceSpec::ToString() const {
  return cuda ? absl::StrCat("cuda:", index) : "cpu";
}

absl::StatusOr<DeviceSpec> ParseDevice(absl::string_view text) {
  const auto invalid = [text] {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: runtime.device must be cpu, cuda or cuda:N (N from 0 to ",
        kMaxCudaIndex, "), got '", absl::CEscape(text.substr(0, 64)), "'"));
  };
  DeviceSpec spec;
  if (text == "cpu") return spec;
  if (text == "cuda") {
    spec.cuda = true;
    return spec;
  }
  if (!absl::ConsumePrefix(&text, "cuda:") || text.empty() || text.size() > 4)
    return invalid();
  int index = 0;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return invalid();
    index = index * 10 + (c - '0');
  }
  // One spelling per GPU: "cuda:01" is refused rather than read as 1.
  if ((text.size() > 1 && text[0] == '0') || index > kMaxCudaIndex)
    return invalid();
  spec.cuda = true;
  spec.index = index;
  return spec;
}

}  // namespace iblip
