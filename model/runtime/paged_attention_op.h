#pragma once

namespace iblip::model {

// The operator the exported language models call for attention over a
// paged KV cache (model/PACKAGE.md):
//
//   iblip::paged_attention(Tensor query, Tensor key_cache, Tensor value_cache,
//       Tensor block_tables, Tensor context_lens, float scale, Tensor? bias)
//       -> Tensor
//
// Its CPU kernel and, for CUDA, the ATen-only PagedAttentionGather
// (paged_attention_gather.h) are registered with the dispatcher by a static
// initializer in paged_attention_op.cc. Call this once before loading a module
// that uses the operator: the call makes the linker keep that object file (and
// with it the registration), and it checks that the operator is there.
void RegisterPagedAttention();

}  // namespace iblip::model
