// Fuzz target: runtime.device (common/device.h). Whatever parses prints back
// as itself or as its canonical spelling, which parses to the same device.

#include <cstddef>
#include <cstdint>

#include "common/device.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = iblip::ParseDevice(text);
  if (!spec.ok()) {
    if (spec.status().message().find("runtime.device") ==
        absl::string_view::npos)
      __builtin_trap();
    return 0;
  }
  if (spec->index < 0 || spec->index > iblip::kMaxCudaIndex) __builtin_trap();
  auto again = iblip::ParseDevice(spec->ToString());
  if (!again.ok() || again->cuda != spec->cuda || again->index != spec->index)
    __builtin_trap();
  return 0;
}
