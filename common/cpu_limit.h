#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace iblip {

// How many CPUs this process may really use. A container's CPU limit is a
// CFS bandwidth quota on its cgroup, not fewer visible CPUs: a pod limited
// to 2 CPUs on a 64-CPU node still sees 64, and a thread pool that size is
// throttled most of each period. So the answer is the smaller of the
// affinity mask and the quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us over
// cpu.cfs_period_us) of this process's cgroup and every ancestor visible.

// cgroup v2 `cpu.max` ("max 100000" or "QUOTA PERIOD"): the quota in CPUs;
// nullopt when unlimited or malformed.
std::optional<double> ParseCgroupV2CpuMax(absl::string_view text);

// cgroup v1 `cpu.cfs_quota_us` (-1: unlimited) and `cpu.cfs_period_us`.
std::optional<double> ParseCgroupV1CpuQuota(absl::string_view quota,
                                            absl::string_view period);

// One line of /proc/self/cgroup: "ID:CONTROLLERS:PATH" (v2: "0::PATH").
struct CgroupMembership {
  bool unified = false;  // the cgroup v2 line
  std::vector<std::string> controllers;
  std::string path;  // absolute, "/" for the root
};
// The well-formed lines of /proc/self/cgroup's text (others are skipped).
std::vector<CgroupMembership> ParseProcCgroup(absl::string_view text);

// The smallest CPU quota that applies to this process, read below `root`
// ("" = the real /; tests pass a fake tree): its cgroup's directory and
// each ancestor up to the mount point (a container with its own cgroup
// namespace sees its cgroup as the mount's root). nullopt: no quota.
std::optional<double> CgroupCpuQuota(const std::string& root = "");

// Threads worth running for CPU-bound work: the CPUs in the affinity mask,
// capped by the cgroup quota rounded down (a 2.5-CPU quota gives 2 threads:
// a third would be throttled), never below 1. `description` (optional)
// says where the number came from, for the log.
int AvailableCpus(std::string* description = nullptr);

}  // namespace iblip
