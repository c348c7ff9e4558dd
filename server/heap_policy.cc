#include "server/heap_policy.h"

#include <malloc.h>

#include <climits>

#include "absl/strings/str_cat.h"

namespace iblip::server {
namespace {

// glibc refuses a larger M_MMAP_THRESHOLD (HEAP_MAX_SIZE / 2 on 64-bit).
constexpr int kLargestHeapAllocation = 32 << 20;

}  // namespace

absl::Status RetainFreedHeapMemory(uint32_t retain_mib) {
  if (retain_mib == 0) return absl::OkStatus();
  if (retain_mib > INT_MAX >> 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime.heap_retain_mib: ", retain_mib,
                     " is out of range (must be <= ", INT_MAX >> 20, ")"));
  }
  // mallopt returns 1 on success. Setting either also turns off glibc's
  // sliding mmap threshold, which is what made the behaviour load-dependent.
  if (mallopt(M_MMAP_THRESHOLD, kLargestHeapAllocation) != 1 ||
      mallopt(M_TRIM_THRESHOLD, static_cast<int>(retain_mib) << 20) != 1) {
    return absl::InternalError(
        "runtime.heap_retain_mib: glibc refused the heap settings (mallopt)");
  }
  return absl::OkStatus();
}

}  // namespace iblip::server
