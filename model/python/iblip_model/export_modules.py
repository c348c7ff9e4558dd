"""The TorchScript submodules of a model package (see model/PACKAGE.md).

Every tensor crossing a module boundary is float32 (a bf16 package converts
at the entry and exit of each module), so the C++ runtime handles one dtype;
KV caches stay in the model's dtype."""

from typing import List, Optional, Tuple

import torch
from torch import nn


class VisionEncoder(nn.Module):
    """pixel_values [B,3,S,S] -> image_embeds [B,1+P,Hv]."""

    def __init__(self, vision_model):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values).to(torch.float32)


class QFormerProjector(nn.Module):
    """(image_embeds, instruction ids, mask) -> soft prompt [B,Q,H_lm]."""

    num_query_tokens: torch.jit.Final[int]

    def __init__(self, model):
        super().__init__()
        self.query_tokens = model.query_tokens
        self.qformer = model.qformer
        self.language_projection = model.language_projection
        self.num_query_tokens = model.config.num_query_tokens

    def forward(self, image_embeds: torch.Tensor, qformer_input_ids: torch.Tensor,
                qformer_attention_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.query_tokens.dtype
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        hidden = self.qformer(qformer_input_ids, qformer_attention_mask, queries, image_embeds.to(dtype))
        return self.language_projection(hidden[:, : self.num_query_tokens]).to(torch.float32)


class LlamaLanguageModel(nn.Module):
    """Decoder-only LM with the KV cache owned by the caller.

    embed(ids [B,T]) -> [B,T,H]
    prefill(inputs_embeds [B,T,H], attention_mask [B,T], position_ids [B,T])
        -> (logits of the last position [B,V], keys, values [L,B,KV,T,D])
    decode(input_ids [B,1], attention_mask [B,S+1], position_ids [B,1],
           past_keys, past_values [L,B,KV,S,D])
        -> (logits [B,V], this step's keys, values [L,B,KV,1,D])
    decode_in_cache(input_ids [B,1], slots, lengths (lists of B ints),
                    cache_keys, cache_values [N,L,KV,M,D])
        -> logits [B,V]; writes each row's new key/value into the cache in
        place (the server's slot pool; what its engine calls each step)
    Rows may be left-padded (mask 0); positions come from the caller."""

    def __init__(self, language_model):
        super().__init__()
        self.lm = language_model

    @torch.jit.export
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.model.embed_tokens(input_ids).to(torch.float32)

    @torch.jit.export
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden, keys, values = self.lm.forward_cached(inputs_embeds, attention_mask, position_ids,
                                                      None, None)
        return self.lm.logits(hidden[:, -1]), keys, values

    @torch.jit.export
    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               position_ids: torch.Tensor, past_keys: torch.Tensor,
               past_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeds = self.lm.model.embed_tokens(input_ids)
        hidden, keys, values = self.lm.forward_cached(embeds, attention_mask, position_ids,
                                                      past_keys, past_values)
        return self.lm.logits(hidden[:, -1]), keys, values

    @torch.jit.export
    def decode_in_cache(self, input_ids: torch.Tensor, slots: List[int], lengths: List[int],
                        cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        hidden = self.lm.decode_in_cache(input_ids, slots, lengths, cache_keys, cache_values)
        return self.lm.logits(hidden[:, -1])

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.prefill(inputs_embeds, attention_mask, position_ids)


class T5LanguageModel(nn.Module):
    """Encoder-decoder LM with the decoder caches owned by the caller.

    embed(ids [B,T]) -> [B,T,d]
    encode(inputs_embeds [B,T,d], attention_mask [B,T]) -> [B,T,d]
    cross_kv(encoder_hidden) -> keys, values [L,B,H,T,D]
    decode(input_ids [B,1], key_positions [B,S+1], self_mask [B,S+1],
           past_keys, past_values [L,B,H,S,D] or None, cross_keys, cross_values,
           encoder_mask [B,T]) -> (logits [B,V], this step's keys, values)"""

    def __init__(self, language_model):
        super().__init__()
        self.lm = language_model

    @torch.jit.export
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.shared(input_ids).to(torch.float32)

    @torch.jit.export
    def encode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm.encode(inputs_embeds, attention_mask)

    @torch.jit.export
    def cross_kv(self, encoder_hidden: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.lm.cross_kv(encoder_hidden)

    @torch.jit.export
    def decode(self, input_ids: torch.Tensor, key_positions: torch.Tensor, self_mask: torch.Tensor,
               past_keys: Optional[torch.Tensor], past_values: Optional[torch.Tensor],
               cross_keys: torch.Tensor, cross_values: torch.Tensor,
               encoder_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.lm.decode_cached(input_ids, key_positions, self_mask, past_keys, past_values,
                                     cross_keys, cross_values, encoder_mask)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encode(inputs_embeds, attention_mask)


LLAMA_METHODS = ["embed", "prefill", "decode", "decode_in_cache"]
T5_METHODS = ["embed", "encode", "cross_kv", "decode"]
