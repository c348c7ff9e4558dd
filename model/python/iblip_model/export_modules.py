"""The TorchScript submodules of a model package (see model/PACKAGE.md).

Every tensor crossing a module boundary is float32 (a bf16 package converts
at the entry and exit of each module), so the C++ runtime handles one dtype;
KV caches stay in the model's dtype."""

from typing import List, Optional, Tuple

import torch
from torch import nn


class VisionEncoder(nn.Module):
    """pixel_values [B,3,S,S] -> image_embeds [B,1+P,Hv], whole or in pieces:

    embed(pixel_values) -> hidden [B,1+P,Hv] (model dtype)
    run_layers(hidden, start, end) -> hidden (encoder layers start .. end-1)
    finish(hidden) -> image_embeds (post_layernorm, float32)
    forward(x) is finish(run_layers(embed(x), 0, num_layers)), the same ops."""

    num_layers: torch.jit.Final[int]

    def __init__(self, vision_model):
        super().__init__()
        self.vision_model = vision_model
        self.num_layers = len(vision_model.encoder.layers)

    @torch.jit.export
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model.embeddings(pixel_values)

    @torch.jit.export
    def run_layers(self, hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return self.vision_model.encoder.run_layers(hidden, start, end)

    @torch.jit.export
    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vision_model.post_layernorm(hidden).to(torch.float32)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.finish(self.run_layers(self.embed(pixel_values), 0, self.num_layers))


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

    @torch.jit.export
    def prefill_paged(self, inputs_embeds: torch.Tensor, start: int, slots: torch.Tensor,
                      cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        hidden = self.lm.prefill_paged(inputs_embeds, start, slots, cache_keys, cache_values)
        return self.lm.logits(hidden)

    @torch.jit.export
    def decode_paged(self, input_ids: torch.Tensor, positions: torch.Tensor,
                     slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                     cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        hidden = self.lm.decode_paged(input_ids, positions, slot_mapping, block_tables, cache_keys,
                                      cache_values)
        return self.lm.logits(hidden)

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

    @torch.jit.export
    def prefill_paged(self, inputs_embeds: torch.Tensor, cross_slots: torch.Tensor, self_slot: int,
                      start_token: int, cache_keys: torch.Tensor,
                      cache_values: torch.Tensor) -> torch.Tensor:
        return self.lm.prefill_paged(inputs_embeds, cross_slots, self_slot, start_token, cache_keys,
                                     cache_values)

    @torch.jit.export
    def decode_paged(self, input_ids: torch.Tensor, positions: torch.Tensor,
                     slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                     cross_block_tables: torch.Tensor, cross_lens: torch.Tensor,
                     cache_keys: torch.Tensor, cache_values: torch.Tensor) -> torch.Tensor:
        return self.lm.decode_paged(input_ids, positions, slot_mapping, block_tables,
                                    cross_block_tables, cross_lens, cache_keys, cache_values)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encode(inputs_embeds, attention_mask)


VISION_METHODS = ["embed", "run_layers", "finish"]
LLAMA_METHODS = ["embed", "prefill", "decode", "decode_in_cache", "prefill_paged", "decode_paged"]
T5_METHODS = ["embed", "encode", "cross_kv", "decode", "prefill_paged", "decode_paged"]
