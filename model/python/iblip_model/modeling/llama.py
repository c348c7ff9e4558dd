"""LLaMA / Vicuna (LlamaForCausalLM), with the KV cache kept outside: each
layer returns the keys and values it computed, and takes the past ones in."""

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from iblip_model import ops  # noqa: F401  (registers torch.ops.iblip.paged_attention)
from iblip_model.modeling.common import Activation, min_value


class LlamaRMSNorm(nn.Module):
    eps: torch.jit.Final[float]

    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Hugging Face's x * cos + rotate_half(x) * sin, bit for bit, in fewer
    operations: rotate_half(x) = [-x2, x1] is roll(x) = [x2, x1] with the
    sign moved into signed_sin = [-sin1, sin2] (made once per forward)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


class LlamaRotaryEmbedding(nn.Module):
    """cos and signed sin (see rotate) for integer positions [B,T]."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[:, :, None].to(torch.float32) * self.inv_freq[None, None, :]
        cos = freqs.cos().to(dtype)
        sin = freqs.sin().to(dtype)
        return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


class LlamaAttention(nn.Module):
    heads: torch.jit.Final[int]
    kv_heads: torch.jit.Final[int]
    head_dim: torch.jit.Final[int]
    scale: torch.jit.Final[float]

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = hidden // self.heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        bias = config.attention_bias
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=bias)

    def project(self, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,T,H], cos/sin [B,T,D] -> q [B,T,heads,D] and k [B,T,KV,D]
        (rotated), v [B,T,KV,D]."""
        b, t, _ = x.shape
        cos, sin = cos[:, :, None], sin[:, :, None]
        q = rotate(self.q_proj(x).view(b, t, self.heads, self.head_dim), cos, sin)
        k = rotate(self.k_proj(x).view(b, t, self.kv_heads, self.head_dim), cos, sin)
        return q, k, self.v_proj(x).view(b, t, self.kv_heads, self.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past_key: Optional[torch.Tensor], past_value: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,T,H]; mask additive [B,1,T,S+T]; past [B,KV,S,D] or None.
        Returns the output and this step's keys/values [B,KV,T,D] (rotated)."""
        b, t, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        keys, values = k, v
        if past_key is not None and past_value is not None:
            keys = torch.cat([past_key, k], dim=2)
            values = torch.cat([past_value, v], dim=2)
        if self.kv_heads != self.heads:
            repeat = self.heads // self.kv_heads
            keys = keys.repeat_interleave(repeat, dim=1)
            values = values.repeat_interleave(repeat, dim=1)
        scores = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, values).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out), k, v

    def forward_in_cache(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         cache_key: torch.Tensor, cache_value: torch.Tensor, slots: List[int],
                         lengths: List[int]) -> torch.Tensor:
        """One new position per row: x [B,1,H]; cache [N,KV,M,D] (this layer's
        slice of the server's KV pool). Writes row b's key/value at position
        lengths[b] of slot slots[b], then attends over that slot's
        lengths[b] + 1 positions in place: no gathered or concatenated copy
        of the cache and no padding, so each row costs what it would alone."""
        b = x.shape[0]
        q, k, v = self.project(x, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scale = math.sqrt(self.head_dim)
        rows: List[torch.Tensor] = []
        for row in range(b):
            slot, length = slots[row], lengths[row]
            cache_key[slot, :, length] = k[row, :, 0]
            cache_value[slot, :, length] = v[row, :, 0]
            keys = cache_key[slot, :, : length + 1]
            values = cache_value[slot, :, : length + 1]
            if self.kv_heads != self.heads:
                repeat = self.heads // self.kv_heads
                keys = keys.repeat_interleave(repeat, dim=0)
                values = values.repeat_interleave(repeat, dim=0)
            scores = torch.matmul(q[row], keys.transpose(1, 2)) / scale
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            rows.append(torch.matmul(probs, values))
        out = torch.stack(rows).transpose(1, 2).reshape(b, 1, -1)
        return self.o_proj(out)

    def forward_paged(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      cache_key: torch.Tensor, cache_value: torch.Tensor,
                      slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                      context_lens: torch.Tensor) -> torch.Tensor:
        """One new position per row, x [B,1,H]; cos/sin [B,1,D]; cache
        [NB,BS,KV,D] (this layer's slice of the paged pool). Writes row b's
        key/value at global slot slot_mapping[b], then attends over its
        context_lens[b] positions through its block table."""
        b = x.shape[0]
        q, k, v = self.project(x, cos, sin)
        cache_key.view(-1, self.kv_heads, self.head_dim).index_copy_(0, slot_mapping, k[:, 0])
        cache_value.view(-1, self.kv_heads, self.head_dim).index_copy_(0, slot_mapping, v[:, 0])
        q = q[:, 0]
        out = torch.ops.iblip.paged_attention(q, cache_key, cache_value, block_tables,
                                              context_lens, self.scale, None)
        return self.o_proj(out.reshape(b, 1, self.heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = Activation(config.hidden_act)

    def gate_up(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.gate_proj(x), self.up_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x)
        return self.down_proj(self.act_fn(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past_key: Optional[torch.Tensor], past_value: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key, past_value)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), k, v

    def forward_in_cache(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         cache_key: torch.Tensor, cache_value: torch.Tensor, slots: List[int],
                         lengths: List[int]) -> torch.Tensor:
        x = x + self.self_attn.forward_in_cache(self.input_layernorm(x), cos, sin, cache_key,
                                                cache_value, slots, lengths)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_paged(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      cache_key: torch.Tensor, cache_value: torch.Tensor,
                      slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                      context_lens: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn.forward_paged(self.input_layernorm(x), cos, sin, cache_key,
                                             cache_value, slot_mapping, block_tables, context_lens)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """The decoder over inputs_embeds. forward_cached runs T new positions
    after S cached ones and returns hidden states and the new keys/values."""

    def __init__(self, config):
        super().__init__()
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        head_dim = config.hidden_size // config.num_attention_heads
        self.rotary_emb = LlamaRotaryEmbedding(head_dim, config.rope_theta)

    def forward_cached(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       position_ids: torch.Tensor, past_keys: Optional[torch.Tensor],
                       past_values: Optional[torch.Tensor]
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs_embeds [B,T,H]; attention_mask [B,S+T] (1 keep, 0 pad) over
        past and new positions; position_ids [B,T]; past [L,B,KV,S,D] or None.
        Returns final hidden states [B,T,H] and new keys/values [L,B,KV,T,D]."""
        x = inputs_embeds.to(self.model.norm.weight.dtype)
        b, t, _ = x.shape
        total = attention_mask.shape[1]
        past_length = total - t
        keep = attention_mask[:, None, None, :].to(torch.bool)
        # Causal within the new positions; every past position is visible.
        causal = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(past_length)
        allowed = keep & causal[None, None]
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~allowed, min_value(x.dtype))
        cos, sin = self.rotary_emb(position_ids, x.dtype)
        new_keys: List[torch.Tensor] = []
        new_values: List[torch.Tensor] = []
        for i, layer in enumerate(self.model.layers):
            past_key: Optional[torch.Tensor] = None
            past_value: Optional[torch.Tensor] = None
            if past_keys is not None and past_values is not None:
                past_key = past_keys[i]
                past_value = past_values[i]
            x, k, v = layer(x, cos, sin, mask, past_key, past_value)
            new_keys.append(k)
            new_values.append(v)
        return self.model.norm(x), torch.stack(new_keys), torch.stack(new_values)

    def decode_in_cache(self, input_ids: torch.Tensor, slots: List[int], lengths: List[int],
                        cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        """One decode step for B sequences whose keys/values live in a slot
        pool cache [N,L,KV,M,D]: row b (input_ids [B,1]) is slot slots[b]
        holding lengths[b] positions; its new key/value is written there.
        Returns the final hidden states [B,1,H]."""
        x = self.model.embed_tokens(input_ids).to(self.model.norm.weight.dtype)
        positions = torch.tensor(lengths, dtype=torch.long, device=x.device)[:, None]
        cos, sin = self.rotary_emb(positions, x.dtype)
        for i, layer in enumerate(self.model.layers):
            x = layer.forward_in_cache(x, cos, sin, cache_keys.select(1, i),
                                       cache_values.select(1, i), slots, lengths)
        return self.model.norm(x)

    def prefill_paged(self, inputs_embeds: torch.Tensor, start: int, slots: torch.Tensor,
                      cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        """One chunk of one sequence's prefill: inputs_embeds [1,T,H] are
        positions start .. start+T-1; slots [>= start+T] maps each position
        to its global slot (block * BS + offset) in the paged pool
        [L,NB,BS,KV,D]. Writes the chunk's keys/values at slots[start:],
        attends causally over positions 0 .. start+T-1 (earlier chunks read
        back from the pool) and returns the final hidden state of the chunk's
        last position [1,H]."""
        x = inputs_embeds.to(self.model.norm.weight.dtype)
        t = x.shape[1]
        total = start + t
        positions = torch.arange(start, total, dtype=torch.long, device=x.device)[None]
        causal = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(start)
        mask = torch.zeros(causal.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~causal, min_value(x.dtype))[None, None]
        cos, sin = self.rotary_emb(positions, x.dtype)
        past_slots = slots[:start]
        new_slots = slots[start:total]
        for i, layer in enumerate(self.model.layers):
            keys = cache_keys[i].view(-1, cache_keys.shape[3], cache_keys.shape[4])
            values = cache_values[i].view(-1, cache_values.shape[3], cache_values.shape[4])
            past_key: Optional[torch.Tensor] = None
            past_value: Optional[torch.Tensor] = None
            if start > 0:  # a gather: prefill is compute-bound, the copy is cheap
                past_key = keys.index_select(0, past_slots).transpose(0, 1)[None]
                past_value = values.index_select(0, past_slots).transpose(0, 1)[None]
            x, k, v = layer(x, cos, sin, mask, past_key, past_value)
            keys.index_copy_(0, new_slots, k[0].transpose(0, 1))
            values.index_copy_(0, new_slots, v[0].transpose(0, 1))
        return self.model.norm(x[:, -1])

    def decode_paged(self, input_ids: torch.Tensor, positions: torch.Tensor,
                     slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                     cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        """One decode step for B sequences in the paged pool [L,NB,BS,KV,D]:
        row b's token (input_ids [B,1]) is at position positions[b], its
        key/value goes to global slot slot_mapping[b], and it attends over
        positions 0 .. positions[b] through block_tables[b]. Returns the final
        hidden states [B,H]."""
        x = self.model.embed_tokens(input_ids).to(self.model.norm.weight.dtype)
        cos, sin = self.rotary_emb(positions[:, None], x.dtype)
        context_lens = positions + 1
        for i, layer in enumerate(self.model.layers):
            x = layer.forward_paged(x, cos, sin, cache_keys[i], cache_values[i], slot_mapping,
                                    block_tables, context_lens)
        return self.model.norm(x[:, 0])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).to(torch.float32)
