#include "model/runtime/bf16_row_dot.h"

// GCC 12's AVX-512 header passes an uninitialized vector as the ignored
// source of some unmasked intrinsics (GCC bug 105593); -Wall flags each use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstring>

namespace iblip::model {
namespace {

uint16_t RoundToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

#define IBLIP_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// One output of one row: w's row read front to back, one stream, as the
// hardware prefetchers like it best. Two accumulators halve the dependency
// chain of the dot-product instructions.
IBLIP_BF16_TARGET float DotRow(const uint16_t* x, const uint16_t* w, int64_t depth) {
  __m512 even = _mm512_setzero_ps();
  __m512 odd = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 64 <= depth; k += 64) {
    even = _mm512_dpbf16_ps(even, reinterpret_cast<__m512bh>(_mm512_loadu_si512(x + k)),
                            reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + k)));
    odd = _mm512_dpbf16_ps(odd, reinterpret_cast<__m512bh>(_mm512_loadu_si512(x + k + 32)),
                           reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + k + 32)));
  }
  for (; k < depth; k += 32) {
    // Masked loads read nothing past the end of a row.
    const int64_t left = std::min<int64_t>(32, depth - k);
    const __mmask32 mask = static_cast<__mmask32>((uint64_t{1} << left) - 1);
    even = _mm512_dpbf16_ps(even, reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, x + k)),
                            reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w + k)));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

}  // namespace

bool Bf16RowDotAvailable() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

void Bf16RowDot(const Bf16RowDotProblem& p, int64_t first_output, int64_t end_output) {
  for (int64_t row = 0; row < p.rows; ++row) {
    const uint16_t* x = p.x + row * p.x_stride;
    uint16_t* y = p.y + row * p.y_stride;
    for (int64_t output = first_output; output < end_output; ++output) {
      float sum = DotRow(x, p.w + output * p.depth, p.depth);
      if (p.bias != nullptr) sum += p.bias[output];
      y[output] = RoundToBf16(sum);
    }
  }
}

}  // namespace iblip::model
