// Fuzz target: encoded image bytes -> pixel values, as every request's image
// is processed. Each input is processed twice, with the heap blocks allocated
// during each pass filled with a different byte first (in-process
// MALLOC_PERTURB_): the two results must be identical -- the same refusal or
// the same pixels -- so a decoder that reads memory it did not write (a
// partly decoded frame, an unset table entry) is caught as a difference.
// A refusal must be INVALID_ARGUMENT naming the field; a success must give
// size x size x 3 finite values.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "model/runtime/image_preprocessor.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IBLIP_FUZZ_MALLOC_HOOKS 1
#include <sanitizer/allocator_interface.h>
#endif
#endif
#ifndef IBLIP_FUZZ_MALLOC_HOOKS
#include <malloc.h>  // glibc's mallopt(M_PERTURB)
#endif

namespace {

constexpr char kField[] = "images[0].data";

#ifdef IBLIP_FUZZ_MALLOC_HOOKS
// The byte every new heap block is filled with, or -1. Only blocks of up to
// 64 KiB: ASan serves those from its primary allocator, where calloc clears
// them after this hook runs; larger ones are fresh (zeroed) mappings that
// calloc does not clear again, so filling them would break calloc.
int fill_byte = -1;

void FillNewBlock(const volatile void* block, size_t size) {
  if (fill_byte >= 0 && size <= (64u << 10))
    std::memset(const_cast<void*>(block), fill_byte, size);
}

void IgnoreFreedBlock(const volatile void*) {}

void FillNewBlocksWith(int byte) {
  // Both hooks must be given (a null one makes the install fail).
  static const bool installed = __sanitizer_install_malloc_and_free_hooks(
                                    FillNewBlock, IgnoreFreedBlock) != 0;
  if (!installed) __builtin_trap();
  fill_byte = byte;
}
#else
void FillNewBlocksWith(int byte) { mallopt(M_PERTURB, byte < 0 ? 0 : byte); }
#endif

bool SameStatus(const absl::Status& a, const absl::Status& b) {
  return a.code() == b.code() && a.message() == b.message();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const iblip::model::ImagePreprocessor* preprocessor = [] {
    iblip::model::ImageSpec spec;
    spec.size =
        32;  // small output keeps executions fast; resize logic is the same
    spec.mean = {0.48f, 0.46f, 0.41f};
    spec.std = {0.27f, 0.26f, 0.28f};
    iblip::model::ImageLimits limits;
    limits.max_image_bytes = 1 << 20;
    limits.max_image_pixels =
        1 << 20;  // larger claims must be refused before decoding
    return new iblip::model::ImagePreprocessor(spec, limits);
  }();
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  FillNewBlocksWith(0x55);
  const auto first = preprocessor->Process(bytes, kField);
  FillNewBlocksWith(0xAA);
  const auto second = preprocessor->Process(bytes, kField);
  FillNewBlocksWith(-1);

  if (first.ok() != second.ok()) __builtin_trap();
  if (!first.ok()) {
    if (!SameStatus(first.status(), second.status())) __builtin_trap();
    if (first.status().code() != absl::StatusCode::kInvalidArgument ||
        first.status().message().rfind(kField, 0) != 0)
      __builtin_trap();
    return 0;
  }
  if (first->size != 32 || first->chw.size() != 3u * 32 * 32) __builtin_trap();
  for (float v : first->chw) {
    if (!std::isfinite(v)) __builtin_trap();
  }
  if (second->chw.size() != first->chw.size() ||
      std::memcmp(first->chw.data(), second->chw.data(),
                  first->chw.size() * sizeof(float)) != 0)
    __builtin_trap();
  return 0;
}
