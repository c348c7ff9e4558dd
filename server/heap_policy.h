#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace iblip::server {

// Keeps freed heap memory in the process, up to `retain_mib`, instead of
// handing it back to the kernel, and serves allocations up to 32 MiB from
// the heap rather than from fresh mmaps.
//
// Why: every forward pass allocates and frees tens of MiB of activations.
// With glibc's defaults, blocks over its mmap threshold are unmapped on free
// and the heap top is trimmed, so the next pass takes a page fault and a
// zeroing for every page again. In a VM (Firecracker here, most cloud
// nodes) a fault costs several microseconds: the medium vision encoder took
// 310 ms per image with the defaults and 104 ms with this policy, on the same
// two cores. 0 keeps glibc's defaults. Process-wide; call once at startup.
absl::Status RetainFreedHeapMemory(uint32_t retain_mib);

}  // namespace iblip::server
