"""The custom operators the exported language models call (contract:
model/PACKAGE.md): `iblip::paged_attention`, attention over a paged KV cache,
and `iblip::linear`, the Linear layers of bf16 language models.

This module defines them through torch.library with Python reference
implementations for CPU, so scripting, export, tests and the Python tools work
without the C++ library. Scripted modules record the calls as `iblip::` nodes;
the C++ runtime registers the same schemas with its fast kernels
(model/runtime/paged_attention_op.cc, linear_op.cc) before it loads them.
With IBLIP_CUSTOM_OPS_LIBRARY naming the build's libiblip_custom_ops.so,
Python loads those kernels instead (benchmarks, cross-checks); operators
already registered in this process are kept."""

import os
from typing import Optional

import torch

SCHEMA = ("paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, "
          "Tensor block_tables, Tensor context_lens, float scale, Tensor? bias) -> Tensor")
LINEAR_SCHEMA = "linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor"


def linear_reference(input: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor]) -> torch.Tensor:
    """aten::linear: what the C++ kernel computes too (its bf16 path for one
    row sums in another order, so it may differ in the last bit)."""
    return torch.nn.functional.linear(input, weight, bias)


def paged_attention_reference(query: torch.Tensor, key_cache: torch.Tensor,
                              value_cache: torch.Tensor, block_tables: torch.Tensor,
                              context_lens: torch.Tensor, scale: float,
                              bias: Optional[torch.Tensor]) -> torch.Tensor:
    """query [B,H,D]; caches [NB,BS,KV,D] (one layer's slice of the pool);
    block_tables [B,MAXB] int64; context_lens [B] int64; bias float32 [B,H,S]
    or None. Row b attends to its positions 0 .. context_lens[b]-1, position
    p living at offset p % BS of block block_tables[b, p // BS]. Everything
    in float32; the result [B,H,D] in the query's dtype. A row with no
    positions gets zeros."""
    batch, heads, dim = query.shape
    blocks, block_size, kv_heads, _ = key_cache.shape
    lengths = context_lens.to(torch.long)
    span = int(lengths.max()) if batch > 0 else 0
    positions = torch.arange(span, device=query.device)
    valid = positions[None, :] < lengths[:, None]  # [B,S]
    # Entries of a block table past a row's need may hold anything: only
    # valid positions index the cache.
    table_index = torch.clamp(positions // block_size, max=max(block_tables.shape[1] - 1, 0))
    block_ids = block_tables.to(torch.long)[:, table_index] if span > 0 else \
        torch.zeros(batch, 0, dtype=torch.long, device=query.device)
    block_ids = torch.where(valid, block_ids, torch.zeros_like(block_ids))
    slots = block_ids * block_size + positions[None, :] % block_size  # [B,S]
    flat_keys = key_cache.reshape(blocks * block_size, kv_heads, dim)
    flat_values = value_cache.reshape(blocks * block_size, kv_heads, dim)
    keys = flat_keys[slots].to(torch.float32).permute(0, 2, 3, 1)  # [B,KV,D,S]
    values = flat_values[slots].to(torch.float32).transpose(1, 2)  # [B,KV,S,D]
    group = heads // kv_heads
    q = query.to(torch.float32).reshape(batch, kv_heads, group, dim)
    scores = torch.matmul(q, keys) * scale  # [B,KV,G,S]
    if bias is not None:
        scores = scores + bias[:, :, :span].to(torch.float32).reshape(batch, kv_heads, group, span)
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(valid[:, None, None, :], probs, torch.zeros_like(probs))  # empty rows: 0
    out = torch.matmul(probs, values).reshape(batch, heads, dim)
    return out.to(query.dtype)


def native_kernel_loaded() -> bool:
    """Whether torch.ops.iblip's operators are the C++ kernels."""
    return _LIBRARY is None


def _native_operators_present() -> bool:
    try:
        torch._C._jit_get_operation("iblip::paged_attention")
        torch._C._jit_get_operation("iblip::linear")
        return True
    except RuntimeError:
        return False


_LIBRARY = None
_NATIVE_LIBRARY = os.environ.get("IBLIP_CUSTOM_OPS_LIBRARY")
if _NATIVE_LIBRARY and not _native_operators_present():
    torch.ops.load_library(_NATIVE_LIBRARY)
if not _native_operators_present():
    _LIBRARY = torch.library.Library("iblip", "DEF")
    _LIBRARY.define(SCHEMA)
    _LIBRARY.impl("paged_attention", paged_attention_reference, "CPU")
    _LIBRARY.define(LINEAR_SCHEMA)
    _LIBRARY.impl("linear", linear_reference, "CPU")
