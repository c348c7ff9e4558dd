"""The instruction-aware Q-Former (InstructBlipQFormerModel): BERT-style,
post-norm; learned queries and instruction tokens share self-attention, and
every cross_attention_frequency-th layer lets the queries read the image."""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from iblip_model.modeling.common import Activation, additive_mask


class InstructBlipQFormerMultiHeadAttention(nn.Module):
    heads: torch.jit.Final[int]
    head_dim: torch.jit.Final[int]

    def __init__(self, config, is_cross_attention: bool):
        super().__init__()
        hidden = config.hidden_size
        kv_width = config.encoder_hidden_size if is_cross_attention else hidden
        self.heads = config.num_attention_heads
        self.head_dim = hidden // self.heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def project(self, hidden: torch.Tensor,
                key_value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.query(hidden), self.key(key_value), self.value(key_value)

    def forward(self, hidden: torch.Tensor, key_value: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        q, k, v = self.project(hidden, key_value)
        q, k, v = self._split(q), self._split(k), self._split(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3)
        return context.reshape(hidden.shape[0], hidden.shape[1], -1)


class InstructBlipQFormerSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class InstructBlipQFormerAttention(nn.Module):
    def __init__(self, config, is_cross_attention: bool = False):
        super().__init__()
        self.attention = InstructBlipQFormerMultiHeadAttention(config, is_cross_attention)
        self.output = InstructBlipQFormerSelfOutput(config)

    def forward(self, hidden: torch.Tensor, key_value: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.output(self.attention(hidden, key_value, mask), hidden)


class InstructBlipQFormerIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = Activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class InstructBlipQFormerOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class InstructBlipQFormerLayer(nn.Module):
    has_cross_attention: torch.jit.Final[bool]

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.attention = InstructBlipQFormerAttention(config)
        self.has_cross_attention = layer_idx % config.cross_attention_frequency == 0
        # Absent layers keep an unused stand-in so TorchScript sees one type.
        self.crossattention = (InstructBlipQFormerAttention(config, is_cross_attention=True)
                               if self.has_cross_attention else nn.Identity())
        self.intermediate = InstructBlipQFormerIntermediate(config)
        self.output = InstructBlipQFormerOutput(config)
        self.intermediate_query = InstructBlipQFormerIntermediate(config)
        self.output_query = InstructBlipQFormerOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, image_embeds: torch.Tensor,
                query_length: int) -> torch.Tensor:
        attended = self.attention(hidden, hidden, mask)
        queries = attended[:, :query_length]
        if self.has_cross_attention:
            queries = self.crossattention(queries, image_embeds, None)
        out = self.output_query(self.intermediate_query(queries), queries)
        if attended.shape[1] > query_length:
            text = attended[:, query_length:]
            out = torch.cat([out, self.output(self.intermediate(text), text)], dim=1)
        return out


class InstructBlipQFormerEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, query_embeds: torch.Tensor) -> torch.Tensor:
        # Positions count instruction tokens only; the queries get none.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        text = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = torch.cat([query_embeds, text.to(query_embeds.dtype)], dim=1)
        return self.layernorm(x.to(self.layernorm.weight.dtype))


class InstructBlipQFormerEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(
            [InstructBlipQFormerLayer(config, i) for i in range(config.num_hidden_layers)])

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, image_embeds: torch.Tensor,
                query_length: int) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask, image_embeds, query_length)
        return hidden


class InstructBlipQFormerModel(nn.Module):
    """(instruction ids, mask, query tokens, image embeds) -> [B,Q+T,H]."""

    def __init__(self, config):
        super().__init__()
        self.embeddings = InstructBlipQFormerEmbeddings(config)
        self.encoder = InstructBlipQFormerEncoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                query_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids, query_embeds)
        query_length = query_embeds.shape[1]
        keep = torch.cat([torch.ones(attention_mask.shape[0], query_length,
                                     dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        mask = additive_mask(keep[:, None, None, :], hidden.dtype)
        return self.encoder(hidden, mask, image_embeds.to(hidden.dtype), query_length)
