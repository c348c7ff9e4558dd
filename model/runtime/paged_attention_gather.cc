#include "model/runtime/paged_attention_gather.h"

#include <algorithm>
#include <limits>

namespace iblip::model {

void CheckPagedAttentionShapes(const at::Tensor& query,
                               const at::Tensor& key_cache,
                               const at::Tensor& value_cache,
                               const at::Tensor& block_tables,
                               const at::Tensor& context_lens) {
  TORCH_CHECK(query.dim() == 3,
              "paged_attention: query must be [B, H, D], got ", query.sizes());
  TORCH_CHECK(key_cache.dim() == 4,
              "paged_attention: key_cache must be [NB, BS, KV, D], got ",
              key_cache.sizes());
  TORCH_CHECK(value_cache.sizes() == key_cache.sizes(),
              "paged_attention: value_cache ", value_cache.sizes(),
              " differs from key_cache ", key_cache.sizes());
  const auto dtype = query.scalar_type();
  TORCH_CHECK(
      key_cache.scalar_type() == dtype && value_cache.scalar_type() == dtype,
      "paged_attention: the caches must have the query's dtype ", dtype);
  const int64_t batch = query.size(0);
  const int64_t heads = query.size(1);
  const int64_t dim = query.size(2);
  const int64_t kv_heads = key_cache.size(2);
  TORCH_CHECK(key_cache.size(3) == dim, "paged_attention: head_dim ", dim,
              " of the query differs from the cache's ", key_cache.size(3));
  TORCH_CHECK(kv_heads > 0 && heads > 0 && heads % kv_heads == 0,
              "paged_attention: ", heads, " query heads are not a multiple of ",
              kv_heads, " kv heads");
  TORCH_CHECK(key_cache.size(1) > 0,
              "paged_attention: block size must be positive");
  TORCH_CHECK(
      block_tables.dim() == 2 && block_tables.size(0) == batch &&
          block_tables.scalar_type() == at::kLong,
      "paged_attention: block_tables must be int64 [B, MAXB] with B = ", batch);
  TORCH_CHECK(
      context_lens.dim() == 1 && context_lens.size(0) == batch &&
          context_lens.scalar_type() == at::kLong,
      "paged_attention: context_lens must be int64 [B] with B = ", batch);
}

at::Tensor PagedAttentionGather(const at::Tensor& query,
                                const at::Tensor& key_cache,
                                const at::Tensor& value_cache,
                                const at::Tensor& block_tables,
                                const at::Tensor& context_lens, double scale,
                                const c10::optional<at::Tensor>& bias) {
  CheckPagedAttentionShapes(query, key_cache, value_cache, block_tables,
                            context_lens);
  const auto dtype = query.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
      "paged_attention: query must be float32, bfloat16 or float16, got ",
      dtype);
  const int64_t batch = query.size(0);
  const int64_t heads = query.size(1);
  const int64_t dim = query.size(2);
  const int64_t num_blocks = key_cache.size(0);
  const int64_t block_size = key_cache.size(1);
  const int64_t kv_heads = key_cache.size(2);
  TORCH_CHECK(num_blocks > 0, "paged_attention: empty cache");
  const int64_t width = block_tables.size(1);
  const int64_t span = width * block_size;  // padded positions per row
  if (batch == 0 || span == 0) return at::zeros_like(query);
  const int64_t group = heads / kv_heads;

  // Checking the tables as the CPU kernel does would read them back to the
  // host once per layer (a device sync). They come from the engine's block
  // manager, never from a request, so they are clamped instead: a bug there
  // reads a wrong block of the pool, never memory outside it (an index_select
  // out of range is a device-side assert that kills the CUDA context).
  const at::Tensor tables = block_tables.clamp(0, num_blocks - 1).reshape({-1});
  // [B, S, KV, D] -> [B, KV, S, D], in float32 for the arithmetic.
  const auto gather = [&](const at::Tensor& cache) {
    return cache.index_select(0, tables)
        .view({batch, span, kv_heads, dim})
        .permute({0, 2, 1, 3})
        .to(at::kFloat);
  };
  const at::Tensor keys = gather(key_cache);
  const at::Tensor values = gather(value_cache);
  // Query heads that share a kv head (GQA) attend together: [B, KV, G, D].
  const at::Tensor q = query.to(at::kFloat).view({batch, kv_heads, group, dim});
  at::Tensor scores =
      at::matmul(q, keys.transpose(2, 3)).mul_(scale);  // [B, KV, G, S]
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.scalar_type() == at::kFloat && b.dim() == 3 &&
                    b.size(0) == batch && b.size(1) == heads,
                "paged_attention: bias must be float32 [B, H, S], got ",
                b.scalar_type(), " ", b.sizes());
    // Positions past a row's context are masked below, so the bias only
    // needs to cover min(its length, span); the rest is padded with zeros.
    const int64_t covered = std::min(b.size(2), span);
    at::Tensor padded = at::zeros({batch, heads, span}, scores.options());
    padded.narrow(2, 0, covered).copy_(b.narrow(2, 0, covered));
    scores.add_(padded.view({batch, kv_heads, group, span}));
  }
  const at::Tensor positions = at::arange(span, context_lens.options());
  const at::Tensor outside =
      positions.unsqueeze(0).ge(context_lens.unsqueeze(1));  // [B, S]
  scores.masked_fill_(outside.view({batch, 1, 1, span}),
                      -std::numeric_limits<float>::infinity());
  // A row with no context has every score -inf, and softmax gives NaN; the
  // CPU kernel returns zeros for it.
  at::Tensor probs =
      at::softmax(scores, -1)
          .masked_fill_(context_lens.eq(0).view({batch, 1, 1, 1}), 0.0);
  at::Tensor out = at::matmul(probs, values);  // [B, KV, G, D]
  return out.view({batch, heads, dim}).to(dtype);
}

}  // namespace iblip::model
