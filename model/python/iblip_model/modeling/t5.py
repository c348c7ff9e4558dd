"""T5 v1.1 / Flan-T5 (T5ForConditionalGeneration) with the decoder's caches
kept outside: self-attention keys/values grow per step, cross-attention
keys/values are computed once from the encoder output."""

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from iblip_model import ops  # noqa: F401  (registers torch.ops.iblip.paged_attention)
from iblip_model.modeling.common import Activation, additive_mask


class T5LayerNorm(nn.Module):
    """RMS norm as T5 does it: unlike LlamaRMSNorm, the normalized fp32 value
    is cast to the weight's dtype (only when that is half or bf16), not back
    to the input's. Kept separate so each matches its reference bit for bit."""

    eps: torch.jit.Final[float]

    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype == torch.float16 or self.weight.dtype == torch.bfloat16:
            x = x.to(self.weight.dtype)
        return self.weight * x


class T5DenseGatedActDense(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = Activation(config.dense_act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x)
        return self.wo(h.to(x.dtype))


class T5DenseActDense(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = Activation(config.dense_act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.act(self.wi(x)).to(x.dtype))


class T5LayerFF(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.DenseReluDense = (T5DenseGatedActDense(config) if config.is_gated_act
                               else T5DenseActDense(config))
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Attention(nn.Module):
    """No 1/sqrt(d) scaling; position bias and mask are added by the caller."""

    heads: torch.jit.Final[int]
    d_kv: torch.jit.Final[int]

    def __init__(self, config, has_relative_attention_bias: bool):
        super().__init__()
        self.heads = config.num_heads
        self.d_kv = config.d_kv
        inner = self.heads * self.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, self.heads)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.d_kv).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k(x)), self.split(self.v(x))

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
        q = self.split(self.q(x))
        scores = torch.matmul(q, keys.transpose(3, 2)) + bias
        probs = torch.softmax(scores.to(torch.float32), dim=-1).to(scores.dtype)
        out = torch.matmul(probs, values).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.o(out)

    def write_kv(self, x: torch.Tensor, cache_key: torch.Tensor, cache_value: torch.Tensor,
                 slots: torch.Tensor):
        """Projects x [N,d] (N positions) to keys/values and writes them at
        the global slots [N] of this layer's pool slice [NB,BS,heads,d_kv]."""
        n = x.shape[0]
        cache_key.view(-1, self.heads, self.d_kv).index_copy_(
            0, slots, self.k(x).view(n, self.heads, self.d_kv))
        cache_value.view(-1, self.heads, self.d_kv).index_copy_(
            0, slots, self.v(x).view(n, self.heads, self.d_kv))

    def attend_paged(self, x: torch.Tensor, cache_key: torch.Tensor, cache_value: torch.Tensor,
                     block_tables: torch.Tensor, context_lens: torch.Tensor,
                     bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x [B,d], one query per row, over the row's context_lens[b] cached
        positions found through block_tables; bias float32 [B,heads,S]."""
        b = x.shape[0]
        q = self.q(x).view(b, self.heads, self.d_kv)
        out = torch.ops.iblip.paged_attention(q, cache_key, cache_value, block_tables,
                                              context_lens, 1.0, bias)
        return self.o(out.view(b, self.heads * self.d_kv))


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> torch.Tensor:
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets = num_buckets // 2
        buckets += (relative_position > 0).to(torch.long) * num_buckets
        n = torch.abs(relative_position)
    else:
        n = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, n, large)


class T5Block(nn.Module):
    """Encoder: [self-attention, FF]; decoder: [self-attention, cross-attention, FF]."""

    is_decoder: torch.jit.Final[bool]

    def __init__(self, config, is_decoder: bool, has_relative_attention_bias: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self_attention = nn.Module()
        self_attention.SelfAttention = T5Attention(config, has_relative_attention_bias)
        self_attention.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        layers = [self_attention]
        if is_decoder:
            cross = nn.Module()
            cross.EncDecAttention = T5Attention(config, False)
            cross.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
            layers.append(cross)
        layers.append(T5LayerFF(config))
        self.layer = nn.ModuleList(layers)


class T5Stack(nn.Module):
    def __init__(self, config, is_decoder: bool):
        super().__init__()
        count = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList([T5Block(config, is_decoder, i == 0) for i in range(count)])
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)


class T5ForConditionalGeneration(nn.Module):
    num_buckets: torch.jit.Final[int]
    max_distance: torch.jit.Final[int]
    logit_scale: torch.jit.Final[float]

    def __init__(self, config):
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, is_decoder=False)
        self.decoder = T5Stack(config, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        # Tied embeddings (original T5) rescale before the head; Flan-T5 is untied.
        self.logit_scale = config.d_model ** -0.5 if config.tie_word_embeddings else 1.0

    def _buckets(self, query_positions: torch.Tensor, key_positions: torch.Tensor,
                 bidirectional: bool) -> torch.Tensor:
        """[B,Tq] x [B,Tk] positions -> relative-position buckets [B,Tq,Tk]."""
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        return relative_position_bucket(relative, bidirectional, self.num_buckets, self.max_distance)

    def encode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = inputs_embeds.to(self.encoder.final_layer_norm.weight.dtype)
        b, t, _ = x.shape
        positions = torch.arange(t, device=x.device)[None].expand(b, t)
        # Block 0 owns the relative bias; every block reuses it (with the mask).
        table = self.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
        bias = table(self._buckets(positions, positions, True)).permute(0, 3, 1, 2).to(x.dtype)
        bias = bias + additive_mask(attention_mask[:, None, None, :], x.dtype)
        for block in self.encoder.block:
            self_layer = block.layer[0]
            normed = self_layer.layer_norm(x)
            k, v = self_layer.SelfAttention.project_kv(normed)
            x = x + self_layer.SelfAttention.attend(normed, k, v, bias)
            x = block.layer[1](x)
        return self.encoder.final_layer_norm(x)

    def cross_kv(self, encoder_hidden: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of every decoder layer: [L,B,heads,T,d_kv]."""
        keys: List[torch.Tensor] = []
        values: List[torch.Tensor] = []
        for block in self.decoder.block:
            k, v = block.layer[1].EncDecAttention.project_kv(encoder_hidden)
            keys.append(k)
            values.append(v)
        return torch.stack(keys), torch.stack(values)

    def decode_cached(self, input_ids: torch.Tensor, key_positions: torch.Tensor,
                      self_mask: torch.Tensor, past_keys: Optional[torch.Tensor],
                      past_values: Optional[torch.Tensor], cross_keys: torch.Tensor,
                      cross_values: torch.Tensor, encoder_mask: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder position per row. input_ids [B,1]; key_positions [B,S+1]
        (positions of past keys then of the new token); self_mask [B,S+1];
        past [L,B,heads,S,d_kv] or None. Returns logits [B,V] and this step's
        self-attention keys/values [L,B,heads,1,d_kv]."""
        dtype = self.encoder.final_layer_norm.weight.dtype
        x = self.shared(input_ids).to(dtype)
        query_positions = key_positions[:, -1:]
        table = self.decoder.block[0].layer[0].SelfAttention.relative_attention_bias
        bias = table(self._buckets(query_positions, key_positions, False)).permute(0, 3, 1, 2).to(dtype)
        bias = bias + additive_mask(self_mask[:, None, None, :], dtype)
        cross_additive = additive_mask(encoder_mask[:, None, None, :], dtype)
        new_keys: List[torch.Tensor] = []
        new_values: List[torch.Tensor] = []
        for i, block in enumerate(self.decoder.block):
            self_layer = block.layer[0]
            normed = self_layer.layer_norm(x)
            k, v = self_layer.SelfAttention.project_kv(normed)
            keys, values = k, v
            if past_keys is not None and past_values is not None:
                keys = torch.cat([past_keys[i], k], dim=2)
                values = torch.cat([past_values[i], v], dim=2)
            x = x + self_layer.SelfAttention.attend(normed, keys, values, bias)
            cross_layer = block.layer[1]
            x = x + cross_layer.EncDecAttention.attend(cross_layer.layer_norm(x), cross_keys[i],
                                                       cross_values[i], cross_additive)
            x = block.layer[2](x)
            new_keys.append(k)
            new_values.append(v)
        hidden = self.decoder.final_layer_norm(x) * self.logit_scale
        return self.lm_head(hidden)[:, -1].to(torch.float32), torch.stack(new_keys), torch.stack(new_values)

    def prefill_paged(self, inputs_embeds: torch.Tensor, cross_slots: torch.Tensor, self_slot: int,
                      start_token: int, cache_keys: torch.Tensor,
                      cache_values: torch.Tensor) -> torch.Tensor:
        """Encoder over inputs_embeds [1,T,d] (no padding); every decoder
        layer's cross keys/values written at cross_slots [T] of the paged pool
        [L,NB,BS,heads,d_kv]; then the decoder's first step (start_token at
        position 0, its self key/value written at self_slot). Returns its
        logits [1,V]."""
        t = inputs_embeds.shape[1]
        encoder_mask = torch.ones(1, t, dtype=torch.long, device=inputs_embeds.device)
        encoded = self.encode(inputs_embeds, encoder_mask)
        for i, block in enumerate(self.decoder.block):
            block.layer[1].EncDecAttention.write_kv(encoded[0], cache_keys[i], cache_values[i],
                                                    cross_slots)
        # The first step attends only to itself and to the whole encoder
        # output: the cached decode over the keys just computed is exact.
        cross_keys, cross_values = self.cross_kv(encoded)
        start = torch.full((1, 1), start_token, dtype=torch.long, device=inputs_embeds.device)
        zero = torch.zeros(1, 1, dtype=torch.long, device=inputs_embeds.device)
        logits, keys, values = self.decode_cached(start, zero, zero + 1, None, None, cross_keys,
                                                  cross_values, encoder_mask)
        slot = torch.full((1,), self_slot, dtype=torch.long, device=inputs_embeds.device)
        for i in range(keys.shape[0]):
            heads, d_kv = keys.shape[2], keys.shape[4]
            cache_keys[i].view(-1, heads, d_kv).index_copy_(0, slot, keys[i, :, :, 0])
            cache_values[i].view(-1, heads, d_kv).index_copy_(0, slot, values[i, :, :, 0])
        return logits

    def decode_paged(self, input_ids: torch.Tensor, positions: torch.Tensor,
                     slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                     cross_block_tables: torch.Tensor, cross_lens: torch.Tensor,
                     cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        """One decoder step for B sequences in the paged pool: row b's token
        (input_ids [B,1]) is at decoder position positions[b]; its self
        key/value goes to slot_mapping[b]; self-attention reads positions
        0 .. positions[b] through block_tables[b], cross-attention the
        cross_lens[b] encoder positions through cross_block_tables[b].
        Returns logits [B,V]."""
        dtype = self.encoder.final_layer_norm.weight.dtype
        x = self.shared(input_ids[:, 0]).to(dtype)  # [B,d]
        span = int(positions.max()) + 1
        key_positions = torch.arange(span, dtype=torch.long, device=x.device)[None]
        table = self.decoder.block[0].layer[0].SelfAttention.relative_attention_bias
        buckets = self._buckets(positions[:, None], key_positions.expand(x.shape[0], span), False)
        bias = table(buckets)[:, 0].permute(0, 2, 1).to(torch.float32).contiguous()  # [B,heads,S]
        context_lens = positions + 1
        for i, block in enumerate(self.decoder.block):
            self_layer = block.layer[0]
            normed = self_layer.layer_norm(x)
            self_layer.SelfAttention.write_kv(normed, cache_keys[i], cache_values[i], slot_mapping)
            x = x + self_layer.SelfAttention.attend_paged(normed, cache_keys[i], cache_values[i],
                                                          block_tables, context_lens, bias)
            cross_layer = block.layer[1]
            x = x + cross_layer.EncDecAttention.attend_paged(
                cross_layer.layer_norm(x), cache_keys[i], cache_values[i], cross_block_tables,
                cross_lens, None)
            x = block.layer[2](x)
        hidden = self.decoder.final_layer_norm(x) * self.logit_scale
        return self.lm_head(hidden).to(torch.float32)
