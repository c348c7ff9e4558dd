#include "common/cpu_limit.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace iblip {
namespace {

// cgroup files are a line or two; anything longer is not one.
constexpr std::streamsize kMaxCgroupFileBytes = 64 * 1024;

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text(kMaxCgroupFileBytes, '\0');
  in.read(text.data(), kMaxCgroupFileBytes);
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

std::optional<double> Ratio(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<double>(quota) / static_cast<double>(period);
}

std::optional<double> ReadV2Quota(const std::string& dir) {
  auto text = ReadSmallFile(dir + "/cpu.max");
  return text ? ParseCgroupV2CpuMax(*text) : std::nullopt;
}

std::optional<double> ReadV1Quota(const std::string& dir) {
  auto quota = ReadSmallFile(dir + "/cpu.cfs_quota_us");
  auto period = ReadSmallFile(dir + "/cpu.cfs_period_us");
  return quota && period ? ParseCgroupV1CpuQuota(*quota, *period)
                         : std::nullopt;
}

// The cgroup's directory under `mount`, then each ancestor up to `mount`
// itself: a limit on a parent (the pod's cgroup) binds the child too, and in
// a container with its own cgroup namespace only `mount` exists.
template <typename ReadQuota>
void MinOverAncestors(const std::string& mount, std::string path,
                      ReadQuota read_quota, std::optional<double>& lowest) {
  for (;;) {
    if (auto quota = read_quota(path == "/" ? mount : mount + path)) {
      lowest = lowest ? std::min(*lowest, *quota) : *quota;
    }
    if (path == "/") return;
    const size_t slash = path.rfind('/');
    path =
        slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
}

int AffinityCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

std::optional<double> ParseCgroupV2CpuMax(absl::string_view text) {
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  if (fields.size() != 2 || fields[0] == "max") return std::nullopt;
  int64_t quota = 0;
  int64_t period = 0;
  if (!absl::SimpleAtoi(fields[0], &quota) ||
      !absl::SimpleAtoi(fields[1], &period)) {
    return std::nullopt;
  }
  return Ratio(quota, period);
}

std::optional<double> ParseCgroupV1CpuQuota(absl::string_view quota,
                                            absl::string_view period) {
  int64_t quota_us = 0;
  int64_t period_us = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota), &quota_us) ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(period), &period_us)) {
    return std::nullopt;
  }
  return Ratio(quota_us, period_us);  // -1: unlimited
}

std::vector<CgroupMembership> ParseProcCgroup(absl::string_view text) {
  std::vector<CgroupMembership> memberships;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    // The path may itself contain ':', so split off two fields only.
    const size_t first = line.find(':');
    if (first == absl::string_view::npos) continue;
    const size_t second = line.find(':', first + 1);
    if (second == absl::string_view::npos) continue;
    const absl::string_view id = line.substr(0, first);
    const absl::string_view controllers =
        line.substr(first + 1, second - first - 1);
    const absl::string_view path = line.substr(second + 1);
    int hierarchy = 0;
    if (!absl::SimpleAtoi(id, &hierarchy) || hierarchy < 0 || path.empty() ||
        path[0] != '/') {
      continue;
    }
    CgroupMembership membership;
    membership.unified = hierarchy == 0 && controllers.empty();
    membership.controllers =
        absl::StrSplit(controllers, ',', absl::SkipEmpty());
    membership.path = std::string(path);
    while (membership.path.size() > 1 && membership.path.back() == '/')
      membership.path.pop_back();
    memberships.push_back(std::move(membership));
  }
  return memberships;
}

std::optional<double> CgroupCpuQuota(const std::string& root) {
  const std::string cgroup_fs = root + "/sys/fs/cgroup";
  // Where cgroup v1's cpu controller is mounted, by distribution habit.
  const std::string v1_mounts[] = {cgroup_fs + "/cpu,cpuacct",
                                   cgroup_fs + "/cpuacct,cpu",
                                   cgroup_fs + "/cpu"};
  std::optional<double> lowest;
  std::vector<CgroupMembership> memberships;
  if (auto text = ReadSmallFile(root + "/proc/self/cgroup"))
    memberships = ParseProcCgroup(*text);
  if (memberships.empty()) {
    // No /proc (a chroot, a test tree): the mounts' roots are all we know.
    memberships.push_back({true, {}, "/"});
    memberships.push_back({false, {"cpu"}, "/"});
  }
  for (const CgroupMembership& membership : memberships) {
    if (membership.unified) {
      MinOverAncestors(cgroup_fs, membership.path, ReadV2Quota, lowest);
    } else if (std::count(membership.controllers.begin(),
                          membership.controllers.end(), "cpu") > 0) {
      for (const std::string& mount : v1_mounts)
        MinOverAncestors(mount, membership.path, ReadV1Quota, lowest);
    }
  }
  return lowest;
}

int AvailableCpus(std::string* description) {
  const int affinity = AffinityCpus();
  const std::optional<double> quota = CgroupCpuQuota();
  int cpus = affinity;
  if (quota) {
    // In doubles first: a quota can exceed any int.
    cpus = static_cast<int>(
        std::clamp(std::floor(*quota), 1.0, static_cast<double>(affinity)));
  }
  if (description != nullptr) {
    *description = quota ? absl::StrFormat(
                               "%d (cgroup CPU quota %.2f, %d CPUs in the "
                               "affinity mask)",
                               cpus, *quota, affinity)
                         : absl::StrFormat(
                               "%d (CPUs in the affinity mask; no cgroup "
                               "CPU quota)",
                               cpus);
  }
  return cpus;
}

}  // namespace iblip
