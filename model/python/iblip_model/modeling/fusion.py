"""Fused projections for the exported modules: LLaMA's q/k/v as one
`qkv_proj` and gate/up as one `gate_up_proj` (one GEMM reads the
activations once and has a wider N for the kernel to block over). The
checkpoint layout on disk and the modeling classes stay Hugging Face's;
export swaps in these subclasses after loading the weights."""

from typing import List, Tuple

import torch
from torch import nn

from iblip_model.modeling.llama import LlamaAttention, LlamaForCausalLM, LlamaMLP, rotate
from iblip_model.modeling.qformer import InstructBlipQFormerModel, InstructBlipQFormerMultiHeadAttention


def _is_dynamic_int8(layer) -> bool:
    return isinstance(layer, torch.ao.nn.quantized.dynamic.Linear)


def fuse_linears(layers: List[nn.Module]) -> nn.Module:
    """One Linear whose output is the concatenation of `layers`' outputs
    (same input width). Works on float Linear layers and on the int8
    dynamic ones export --dtype int8 makes: their per-output-channel int8
    weights and scales concatenate exactly, so the fused layer computes what
    the separate ones did."""
    if all(_is_dynamic_int8(layer) for layer in layers):
        weights = [layer.weight() for layer in layers]
        qweight = torch._make_per_channel_quantized_tensor(
            torch.cat([w.int_repr() for w in weights]),
            torch.cat([w.q_per_channel_scales() for w in weights]),
            torch.cat([w.q_per_channel_zero_points() for w in weights]), 0)
        biases = [layer.bias() for layer in layers]
        fused = torch.ao.nn.quantized.dynamic.Linear(
            layers[0].in_features, sum(layer.out_features for layer in layers), dtype=torch.qint8)
        fused.set_weight_bias(qweight, torch.cat(biases) if biases[0] is not None else None)
        return fused
    if not all(type(layer) is nn.Linear for layer in layers):
        raise TypeError(f"cannot fuse {[type(layer).__name__ for layer in layers]}")
    first = layers[0]
    has_bias = first.bias is not None
    fused = nn.Linear(first.in_features, sum(layer.out_features for layer in layers), bias=has_bias,
                      dtype=first.weight.dtype, device=first.weight.device)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([layer.weight for layer in layers]))
        if has_bias:
            fused.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return fused


class FusedLlamaAttention(LlamaAttention):
    heads: torch.jit.Final[int]
    kv_heads: torch.jit.Final[int]
    head_dim: torch.jit.Final[int]
    scale: torch.jit.Final[float]

    def __init__(self, attention: LlamaAttention):
        nn.Module.__init__(self)
        self.heads, self.kv_heads = attention.heads, attention.kv_heads
        self.head_dim, self.scale = attention.head_dim, attention.scale
        self.qkv_proj = fuse_linears([attention.q_proj, attention.k_proj, attention.v_proj])
        self.o_proj = attention.o_proj

    def project(self, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        qkv = self.qkv_proj(x)
        rotated = (self.heads + self.kv_heads) * self.head_dim
        # q and k sit side by side in qkv's output: one rotation for both.
        qk = rotate(qkv[..., :rotated].view(b, t, self.heads + self.kv_heads, self.head_dim),
                    cos[:, :, None], sin[:, :, None])
        v = qkv[..., rotated:].view(b, t, self.kv_heads, self.head_dim)
        return qk[:, :, :self.heads], qk[:, :, self.heads:], v


class FusedLlamaMLP(LlamaMLP):
    def __init__(self, mlp: LlamaMLP):
        nn.Module.__init__(self)
        self.gate_up_proj = fuse_linears([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn

    def gate_up(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return gate, up


@torch.no_grad()
def fuse_llama_projections(lm: LlamaForCausalLM) -> LlamaForCausalLM:
    """Swaps, in place, every layer's attention and MLP for the fused
    variants (dropping the separate weights); returns `lm`."""
    for layer in lm.model.layers:
        if type(layer.self_attn) is LlamaAttention:
            layer.self_attn = FusedLlamaAttention(layer.self_attn)
        if type(layer.mlp) is LlamaMLP:
            layer.mlp = FusedLlamaMLP(layer.mlp)
    return lm


class FusedQFormerSelfAttention(InstructBlipQFormerMultiHeadAttention):
    """The Q-Former's self-attention (key_value is hidden) with one q/k/v GEMM."""

    heads: torch.jit.Final[int]
    head_dim: torch.jit.Final[int]

    def __init__(self, attention: InstructBlipQFormerMultiHeadAttention):
        nn.Module.__init__(self)
        self.heads, self.head_dim = attention.heads, attention.head_dim
        self.qkv = fuse_linears([attention.query, attention.key, attention.value])

    def project(self, hidden: torch.Tensor,
                key_value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(hidden).chunk(3, dim=-1)
        return q, k, v


@torch.no_grad()
def fuse_qformer_projections(qformer: InstructBlipQFormerModel) -> InstructBlipQFormerModel:
    """Every layer's self-attention (not the cross-attention: its keys come
    from the image) with fused q/k/v, in place; returns `qformer`."""
    for layer in qformer.encoder.layer:
        attention = layer.attention.attention
        if type(attention) is InstructBlipQFormerMultiHeadAttention:
            layer.attention.attention = FusedQFormerSelfAttention(attention)
    return qformer
