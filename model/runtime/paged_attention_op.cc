// iblip::paged_attention: one decode query per row against that row's keys
// and values, which live in fixed-size blocks of a shared pool found through
// the row's block table (vLLM's layout, on the CPU).
//
// Work is split over rows and, when rows are fewer than twice the threads,
// runs of kv heads; an item reads each position's keys/values for its kv
// heads as one contiguous run, and the query heads that share a kv head
// (GQA) read it together. Keys and values are read in place (no gather
// copy); bf16 is widened to float32 as it is read, and scores, softmax and
// the weighted sum accumulate in float32. The hot loops are compiled for AVX-512, AVX2 and
// baseline x86-64 and picked at load time (GCC target_clones): the build
// targets baseline x86-64, the servers have AVX-512.

#include "model/runtime/paged_attention_op.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "model/runtime/paged_attention_gather.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define IBLIP_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define IBLIP_MULTIVERSION
#endif
#define IBLIP_INLINE inline __attribute__((always_inline))

namespace iblip::model {
namespace {

constexpr int kLanes = 16;  // independent partial sums: vector lanes, no reassociation

IBLIP_INLINE float Widen(float x) { return x; }
IBLIP_INLINE float Widen(uint16_t bf16_bits) {
  const uint32_t bits = static_cast<uint32_t>(bf16_bits) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Folds the lanes pairwise (a tree the compiler vectorizes), not one by one.
IBLIP_INLINE float SumLanes(float* lanes) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

template <typename T>
IBLIP_INLINE float Dot(const float* __restrict q, const T* __restrict k, int64_t n) {
  float lanes[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += q[d + j] * Widen(k[d + j]);
  }
  float tail = 0.0f;
  for (; d < n; ++d) tail += q[d] * Widen(k[d]);
  return SumLanes(lanes) + tail;
}

IBLIP_INLINE float Max(const float* __restrict x, int64_t n) {
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] = lanes[j] < x[i + j] ? x[i + j] : lanes[j];
  }
  float result = -std::numeric_limits<float>::infinity();
  for (; i < n; ++i) result = std::max(result, x[i]);
  for (int j = 0; j < kLanes; ++j) result = std::max(result, lanes[j]);
  return result;
}

IBLIP_INLINE float Sum(const float* __restrict x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i];
  return SumLanes(lanes) + tail;
}

// e^x for x <= 0 (a score minus the row's maximum) in plain arithmetic, so
// loops over it vectorize (std::exp does not): x = n ln2 + r with |r| <=
// ln2/2 (Cody-Waite, ln2 split in two), Cephes' degree-5 polynomial for e^r
// (about 1e-7 relative error), 2^n through the exponent bits.
IBLIP_INLINE float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;  // e^-87 ~ 1.6e-38: weights this small vanish anyway
  constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRoundingShift) - kRoundingShift;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float two_to_n;
  std::memcpy(&two_to_n, &bits, sizeof(two_to_n));
  return p * two_to_n;
}

// Asks for the cache lines of [data, data + bytes): the next position's run,
// requested while this one's is computed on. Without it the loops stall on
// each run (measured: ~4 GB/s of a 22 GB/s stream).
IBLIP_INLINE void Prefetch(const void* data, int64_t bytes) {
  const char* bytes_at = static_cast<const char*>(data);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(bytes_at + offset);
}

struct Geometry {
  int64_t group;       // query heads per kv head
  int64_t kv_heads;
  int64_t head_dim;
  int64_t block_size;
};

// One work item: one row's kv heads kv_begin .. kv_begin+kv_count-1 and
// their query heads (q [heads, head_dim] float32, heads = kv_count * group,
// in head order) over `length` positions. Positions are the outer loop and
// the item's kv heads the inner one, so the cache is read as the contiguous
// run [kv_begin, kv_begin+kv_count) x head_dim of each position: one head's
// keys alone sit kv_heads * head_dim apart, a stride that defeats the
// hardware prefetchers. scores: scratch of heads * length floats; out
// [heads, head_dim]: the normalized result.
template <typename T>
IBLIP_INLINE void AttendHeads(const Geometry& g, const float* __restrict q,
                              const T* __restrict keys, const T* __restrict values,
                              int64_t kv_begin, int64_t kv_count,
                              const int64_t* __restrict table, int64_t length,
                              const float* __restrict bias, int64_t bias_stride, float scale,
                              float* __restrict scores, float* __restrict out) {
  const int64_t dim = g.head_dim;
  const int64_t heads = kv_count * g.group;
  const int64_t position_stride = g.kv_heads * dim;
  const int64_t block_stride = g.block_size * position_stride;
  std::fill(out, out + heads * dim, 0.0f);
  if (length == 0) return;

  const int64_t run_bytes = kv_count * dim * static_cast<int64_t>(sizeof(T));
  // The run of position p (keys or values) and of the position after it.
  const auto run_at = [&](const T* cache, int64_t p) {
    return cache + (table[p / g.block_size] * g.block_size + p % g.block_size) * position_stride +
           kv_begin * dim;
  };
  for (int64_t start = 0, j = 0; start < length; start += g.block_size, ++j) {
    const int64_t count = std::min(g.block_size, length - start);
    const T* block = keys + table[j] * block_stride + kv_begin * dim;
    for (int64_t o = 0; o < count; ++o) {
      const T* run = block + o * position_stride;
      if (start + o + 1 < length) Prefetch(run_at(keys, start + o + 1), run_bytes);
      float* column = scores + start + o;
      for (int64_t h = 0; h < heads; ++h) {
        column[h * length] = Dot(q + h * dim, run + (h / g.group) * dim, dim);
      }
    }
  }

  std::vector<float> inverse_sums(heads);
  for (int64_t h = 0; h < heads; ++h) {
    float* s = scores + h * length;
    if (bias != nullptr) {
      const float* b = bias + h * bias_stride;
      for (int64_t p = 0; p < length; ++p) s[p] = s[p] * scale + b[p];
    } else {
      for (int64_t p = 0; p < length; ++p) s[p] *= scale;
    }
    const float max = Max(s, length);
    for (int64_t p = 0; p < length; ++p) s[p] = ExpNonPositive(s[p] - max);
    inverse_sums[h] = 1.0f / Sum(s, length);  // >= 1: the maximum contributes e^0
  }

  for (int64_t start = 0, j = 0; start < length; start += g.block_size, ++j) {
    const int64_t count = std::min(g.block_size, length - start);
    const T* block = values + table[j] * block_stride + kv_begin * dim;
    for (int64_t o = 0; o < count; ++o) {
      const T* run = block + o * position_stride;
      if (start + o + 1 < length) Prefetch(run_at(values, start + o + 1), run_bytes);
      const float* column = scores + start + o;
      for (int64_t h = 0; h < heads; ++h) {
        const float weight = column[h * length];
        const T* v = run + (h / g.group) * dim;
        float* o_h = out + h * dim;
        for (int64_t d = 0; d < dim; ++d) o_h[d] += weight * Widen(v[d]);
      }
    }
  }
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t d = 0; d < dim; ++d) out[h * dim + d] *= inverse_sums[h];
  }
}

IBLIP_MULTIVERSION void AttendHeadsFloat(const Geometry& g, const float* q, const float* keys,
                                         const float* values, int64_t kv_begin, int64_t kv_count,
                                         const int64_t* table, int64_t length, const float* bias,
                                         int64_t bias_stride, float scale, float* scores,
                                         float* out) {
  AttendHeads(g, q, keys, values, kv_begin, kv_count, table, length, bias, bias_stride, scale,
              scores, out);
}

IBLIP_MULTIVERSION void AttendHeadsBFloat16(const Geometry& g, const float* q,
                                            const uint16_t* keys, const uint16_t* values,
                                            int64_t kv_begin, int64_t kv_count,
                                            const int64_t* table, int64_t length,
                                            const float* bias, int64_t bias_stride, float scale,
                                            float* scores, float* out) {
  AttendHeads(g, q, keys, values, kv_begin, kv_count, table, length, bias, bias_stride, scale,
              scores, out);
}

// Every index the kernel will follow, checked before it runs: the block
// tables come from the caller and a bad entry must not read outside the pool.
void CheckTables(const at::Tensor& block_tables, const at::Tensor& context_lens,
                 int64_t num_blocks, int64_t block_size) {
  const int64_t rows = block_tables.size(0);
  const int64_t width = block_tables.size(1);
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lengths = context_lens.data_ptr<int64_t>();
  for (int64_t b = 0; b < rows; ++b) {
    TORCH_CHECK(lengths[b] >= 0 && lengths[b] <= width * block_size,
                "paged_attention: context_lens[", b, "] = ", lengths[b], " is outside 0..",
                width * block_size, " (block_tables width ", width, " x block size ",
                block_size, ")");
    const int64_t used = (lengths[b] + block_size - 1) / block_size;
    for (int64_t j = 0; j < used; ++j) {
      const int64_t block = tables[b * width + j];
      TORCH_CHECK(block >= 0 && block < num_blocks, "paged_attention: block_tables[", b, "][",
                  j, "] = ", block, " is not a block of the cache (", num_blocks, " blocks)");
    }
  }
}

at::Tensor PagedAttention(const at::Tensor& query_in, const at::Tensor& key_cache,
                          const at::Tensor& value_cache, const at::Tensor& block_tables_in,
                          const at::Tensor& context_lens_in, double scale,
                          const c10::optional<at::Tensor>& bias_in) {
  CheckPagedAttentionShapes(query_in, key_cache, value_cache, block_tables_in,
                            context_lens_in);
  const auto dtype = query_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "paged_attention: query must be float32 or bfloat16, got ", dtype);
  TORCH_CHECK(query_in.device().is_cpu() && key_cache.device().is_cpu() &&
                  value_cache.device().is_cpu(),
              "paged_attention: this kernel runs on the CPU");
  // The pool is never copied: a non-contiguous slice is the caller's bug.
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged_attention: key_cache and value_cache must be contiguous");
  const int64_t batch = query_in.size(0);
  const int64_t heads = query_in.size(1);
  const int64_t dim = query_in.size(2);
  const int64_t num_blocks = key_cache.size(0);
  const int64_t block_size = key_cache.size(1);
  const int64_t kv_heads = key_cache.size(2);
  const at::Tensor query = query_in.contiguous();
  const at::Tensor block_tables = block_tables_in.contiguous();
  const at::Tensor context_lens = context_lens_in.contiguous();
  CheckTables(block_tables, context_lens, num_blocks, block_size);
  const int64_t* lengths = context_lens.data_ptr<int64_t>();
  const int64_t longest = batch == 0 ? 0 : *std::max_element(lengths, lengths + batch);

  at::Tensor bias;
  int64_t bias_span = 0;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.dim() == 3 && bias.size(0) == batch &&
                    bias.size(1) == heads && bias.size(2) >= longest,
                "paged_attention: bias must be float32 [B, H, S] with S >= max(context_lens) = ",
                longest, ", got ", bias.scalar_type(), " ", bias.sizes());
    bias_span = bias.size(2);
  }

  at::Tensor output = at::empty({batch, heads, dim}, query.options());
  const Geometry geometry{heads / kv_heads, kv_heads, dim, block_size};
  // Work items: (row, a run of kv heads). Rows alone when there are enough
  // to keep every thread busy; otherwise each row's kv heads are split.
  const int64_t threads = at::get_num_threads();
  const int64_t splits =
      batch == 0 ? 1 : std::min(kv_heads, std::max<int64_t>(1, (2 * threads + batch - 1) / batch));
  const int64_t kv_per_item = (kv_heads + splits - 1) / splits;
  const int64_t table_width = block_tables.size(1);
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const float* bias_data = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const bool bf16 = dtype == at::kBFloat16;
  const void* query_data = query.data_ptr();
  const void* keys = key_cache.data_ptr();
  const void* values = value_cache.data_ptr();
  void* output_data = output.data_ptr();
  const float scale_f = static_cast<float>(scale);

  at::parallel_for(0, batch * splits, 1, [&](int64_t begin, int64_t end) {
    const int64_t most = kv_per_item * geometry.group;  // query heads of an item
    std::vector<float> q(most * dim);
    std::vector<float> out(most * dim);
    std::vector<float> scores(most * longest);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / splits;
      const int64_t kv_begin = (item % splits) * kv_per_item;
      const int64_t kv_count = std::min(kv_per_item, kv_heads - kv_begin);
      if (kv_count <= 0) continue;
      const int64_t first_head = b * heads + kv_begin * geometry.group;
      const int64_t first = first_head * dim;
      const int64_t width = kv_count * geometry.group * dim;
      for (int64_t i = 0; i < width; ++i) {
        q[i] = bf16 ? Widen(static_cast<const uint16_t*>(query_data)[first + i])
                    : static_cast<const float*>(query_data)[first + i];
      }
      const float* item_bias = bias_data == nullptr ? nullptr : bias_data + first_head * bias_span;
      const int64_t* table = tables + b * table_width;
      if (bf16) {
        AttendHeadsBFloat16(geometry, q.data(), static_cast<const uint16_t*>(keys),
                            static_cast<const uint16_t*>(values), kv_begin, kv_count, table,
                            lengths[b], item_bias, bias_span, scale_f, scores.data(), out.data());
        auto* o = static_cast<c10::BFloat16*>(output_data) + first;
        for (int64_t i = 0; i < width; ++i) o[i] = c10::BFloat16(out[i]);
      } else {
        AttendHeadsFloat(geometry, q.data(), static_cast<const float*>(keys),
                         static_cast<const float*>(values), kv_begin, kv_count, table, lengths[b],
                         item_bias, bias_span, scale_f, scores.data(), out.data());
        std::copy(out.begin(), out.begin() + width, static_cast<float*>(output_data) + first);
      }
    }
  });
  return output;
}

}  // namespace

TORCH_LIBRARY(iblip, m) {
  m.def(
      "paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, "
      "Tensor block_tables, Tensor context_lens, float scale, Tensor? bias) -> Tensor");
  m.impl("paged_attention", c10::DispatchKey::CPU, TORCH_FN(PagedAttention));
  // No CUDA kernel of our own: the ATen-only gather version runs there (a
  // CPU-only LibTorch keeps the registration and never calls it).
  m.impl("paged_attention", c10::DispatchKey::CUDA,
         TORCH_FN(PagedAttentionGather));
}

void RegisterPagedAttention() {
  // The static registration above has run once this object is linked in,
  // which this function's callers guarantee.
  TORCH_CHECK(c10::Dispatcher::singleton().findSchema({"iblip::paged_attention", ""}).has_value(),
              "iblip::paged_attention is not registered");
}

}  // namespace iblip::model
