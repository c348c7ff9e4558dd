#pragma once

// iblip::paged_attention for devices without a hand-written kernel (CUDA):
// the same contract as the CPU kernel (paged_attention_op.h), computed with
// ATen operators only, so it runs wherever ATen does. Registered for the
// CUDA dispatch key by paged_attention_op.cc; callable directly, so the CPU
// tests check it against the CPU kernel.
//
// Each row's blocks are gathered into a padded [B, W*BS, KV, D] copy (W =
// the block table's width), scores and softmax run in float32 with the
// positions past a row's context masked, then one batched matmul with the
// values. It costs a copy of the rows' keys and values per layer, which a
// fused kernel (vLLM's) avoids; correctness first, measured in
// bench/gpu/run.sh.

#include <ATen/ATen.h>

namespace iblip::model {

// The checks both implementations make, none of which reads tensor data (so
// none waits for a device): ranks and shapes, the caches' dtype equal to the
// query's, query heads a multiple of kv heads, int64 tables and lengths with
// one row per query. Each implementation adds its own (dtypes it computes,
// the CPU kernel's table contents and contiguity).
void CheckPagedAttentionShapes(const at::Tensor& query,
                               const at::Tensor& key_cache,
                               const at::Tensor& value_cache,
                               const at::Tensor& block_tables,
                               const at::Tensor& context_lens);

at::Tensor PagedAttentionGather(const at::Tensor& query,
                                const at::Tensor& key_cache,
                                const at::Tensor& value_cache,
                                const at::Tensor& block_tables,
                                const at::Tensor& context_lens, double scale,
                                const c10::optional<at::Tensor>& bias);

}  // namespace iblip::model
