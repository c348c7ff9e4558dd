// Fuzz target: the cgroup file parsers behind runtime.num_threads = 0
// (/proc/self/cgroup, cgroup v2 cpu.max, v1 cpu.cfs_quota_us and
// cpu.cfs_period_us). A quota, when there is one, is positive and finite;
// paths stay absolute.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common/cpu_limit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto check = [](std::optional<double> quota) {
    if (quota && !(std::isfinite(*quota) && *quota > 0)) __builtin_trap();
  };
  check(iblip::ParseCgroupV2CpuMax(text));
  const size_t half = size / 2;
  check(iblip::ParseCgroupV1CpuQuota(text.substr(0, half), text.substr(half)));
  for (const auto& membership : iblip::ParseProcCgroup(text)) {
    if (membership.path.empty() || membership.path[0] != '/') __builtin_trap();
  }
  return 0;
}
