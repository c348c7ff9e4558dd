"""InstructBlipForConditionalGeneration: vision encoder -> Q-Former ->
language projection -> LLaMA or T5, loaded from a Hugging Face checkpoint."""

import contextlib
import re
from typing import List

import torch
from torch import nn

from iblip_model import checkpoint, hf_config
from iblip_model.hf_config import CheckpointError
from iblip_model.modeling.llama import LlamaForCausalLM
from iblip_model.modeling.qformer import InstructBlipQFormerModel
from iblip_model.modeling.t5 import T5ForConditionalGeneration
from iblip_model.modeling.vision import InstructBlipVisionModel
from iblip_model.quantize import quantize_linear_layers

# Buffers some checkpoints carry and our modules recompute (or tie).
_IGNORED_KEYS = [
    re.compile(r"qformer\.embeddings\.position_ids$"),
    re.compile(r".*\.rotary_emb\.inv_freq$"),
    re.compile(r"language_model\.(encoder|decoder)\.embed_tokens\.weight$"),
]


class InstructBlipForConditionalGeneration(nn.Module):
    def __init__(self, config: hf_config.InstructBlipConfig):
        super().__init__()
        self.config = config
        self.vision_model = InstructBlipVisionModel(config.vision)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens,
                                                     config.qformer.hidden_size))
        self.qformer = InstructBlipQFormerModel(config.qformer)
        lm_hidden = config.text.hidden_size if config.lm_family == "llama" else config.text.d_model
        self.language_projection = nn.Linear(config.qformer.hidden_size, lm_hidden)
        self.language_model = (LlamaForCausalLM(config.text) if config.lm_family == "llama"
                               else T5ForConditionalGeneration(config.text))

    # -- stages -------------------------------------------------------------
    def query_output(self, pixel_values, qformer_input_ids, qformer_attention_mask):
        """Q-Former output over queries + instruction: [B,Q+T,Hq]."""
        image_embeds = self.vision_model(pixel_values)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return self.qformer(qformer_input_ids, qformer_attention_mask, queries, image_embeds)

    def soft_prompt(self, pixel_values, qformer_input_ids, qformer_attention_mask):
        """The projected queries, [B,Q,H_lm]: the image's part of the LM input."""
        hidden = self.query_output(pixel_values, qformer_input_ids, qformer_attention_mask)
        return self.language_projection(hidden[:, : self.config.num_query_tokens])

    def embed(self, input_ids):
        if self.config.lm_family == "llama":
            return self.language_model.model.embed_tokens(input_ids)
        return self.language_model.shared(input_ids)


@contextlib.contextmanager
def uninitialized_weights():
    """Modules built inside skip their random initialization: every weight
    is loaded next, and a 7B model's fp32 skeleton then commits no memory
    until its weights arrive (or are quantized away)."""
    classes = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv2d)
    saved = [cls.reset_parameters for cls in classes]
    for cls in classes:
        cls.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for cls, method in zip(classes, saved):
            cls.reset_parameters = method


def _fail(source, kind, names):
    names = sorted(names)
    raise CheckpointError(f"{source}: {kind} key '{names[0]}'"
                          + (f" (and {len(names) - 1} more)" if len(names) > 1 else ""))


@torch.no_grad()
def load_pretrained(checkpoint_dir, dtype=torch.float32, quantize_int8=False):
    """Our model with the checkpoint's weights, in eval mode, as `dtype`
    (quantize_int8: fp32 with every Linear layer dynamically quantized).
    Weights are copied in one weight file at a time, and with quantize_int8
    each Linear layer is quantized as soon as its weights are in, so the
    peak memory stays near the result's size plus one shard."""
    if quantize_int8 and dtype != torch.float32:
        raise ValueError("int8 quantization starts from fp32 layers")
    config = hf_config.load_config(checkpoint_dir)
    with uninitialized_weights():
        model = InstructBlipForConditionalGeneration(config)
    model = model.to(dtype)
    targets = model.state_dict(keep_vars=True)
    # Shapes only from here on: a reference to a Linear's fp32 weight would
    # keep it alive after the layer is quantized.
    expected = {name: tuple(t.shape) for name, t in targets.items()}
    loaded = set()
    complete = lambda layer: all(f"{layer}.{p}" in loaded  # noqa: E731
                                 for p in ("weight", "bias") if f"{layer}.{p}" in expected)
    for shard in checkpoint.iter_state_dict(checkpoint_dir):
        names = [n for n in shard if not any(p.match(n) for p in _IGNORED_KEYS)]
        unexpected = [n for n in names if n not in expected]
        if unexpected:
            _fail(checkpoint_dir, "unexpected", unexpected)
        for name in names:
            tensor = shard[name]
            if tuple(tensor.shape) != expected[name]:
                raise CheckpointError(f"{checkpoint_dir}: key '{name}' has shape {tuple(tensor.shape)}, "
                                      f"config.json implies {expected[name]}")
            if not tensor.is_floating_point():
                raise CheckpointError(f"{checkpoint_dir}: key '{name}' has dtype {tensor.dtype}, "
                                      "expected floats")
            targets.pop(name).copy_(tensor)
            loaded.add(name)
        del shard
        if quantize_int8:
            quantize_linear_layers(model, complete)
    text = config.text
    head, shared = "language_model.lm_head.weight", "language_model.shared.weight"
    if (config.lm_family == "t5" and head not in loaded and text.tie_word_embeddings
            and shared in loaded):
        targets.pop(head).copy_(model.language_model.shared.weight)
        loaded.add(head)
    if set(expected) - loaded:
        _fail(checkpoint_dir, "missing", set(expected) - loaded)
    if quantize_int8:
        quantize_linear_layers(model)  # a tied head, loaded last
    return model.eval()


# -- eager generation (reference loop for tests and benchmarks) --------------

@torch.no_grad()
def greedy_generate(model, pixel_values, input_ids, attention_mask, qformer_input_ids,
                    qformer_attention_mask, max_new_tokens, eos_token_ids, pad_token_id=0,
                    on_token=None):
    """Hugging Face-style greedy decoding with inputs_embeds = [soft prompt;
    prompt] (left padding allowed). Returns (new token ids per row, the
    logits of each step [steps,B,V]). `on_token`, if given, is called with
    each step's chosen ids [B] as soon as they are known (benchmarks time
    the stream with it)."""
    soft = model.soft_prompt(pixel_values, qformer_input_ids, qformer_attention_mask)
    embeds = torch.cat([soft, model.embed(input_ids).to(soft.dtype)], dim=1)
    mask = torch.cat([torch.ones(soft.shape[:2], dtype=attention_mask.dtype), attention_mask], dim=1)
    b = input_ids.shape[0]
    finished = torch.zeros(b, dtype=torch.bool)
    tokens: List[List[int]] = [[] for _ in range(b)]
    step_logits = []
    lm = model.language_model
    if model.config.lm_family == "llama":
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        hidden, keys, values = lm.forward_cached(embeds, mask, positions, None, None)
        logits = lm.logits(hidden[:, -1])
        next_position = positions[:, -1:] + 1
    else:
        encoded = lm.encode(embeds, mask)
        cross_k, cross_v = lm.cross_kv(encoded)
        start = torch.full((b, 1), model.config.text.decoder_start_token_id, dtype=torch.long)
        key_positions = torch.zeros(b, 1, dtype=torch.long)
        self_mask = torch.ones(b, 1, dtype=torch.long)
        logits, keys, values = lm.decode_cached(start, key_positions, self_mask, None, None,
                                                cross_k, cross_v, mask)
    for _ in range(max_new_tokens):
        step_logits.append(logits)
        chosen = logits.argmax(-1)
        chosen = torch.where(finished, torch.full_like(chosen, pad_token_id), chosen)
        for row in range(b):
            if not finished[row]:
                tokens[row].append(int(chosen[row]))
        if on_token is not None:
            on_token(chosen)
        finished |= torch.isin(chosen, torch.tensor(eos_token_ids))
        if bool(finished.all()) or len(step_logits) == max_new_tokens:
            break
        ids = chosen[:, None]
        if model.config.lm_family == "llama":
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype)], dim=1)
            hidden, k, v = lm.forward_cached(model.embed(ids), mask, next_position, keys, values)
            logits = lm.logits(hidden[:, -1])
            next_position = next_position + 1
        else:
            key_positions = torch.cat([key_positions, key_positions[:, -1:] + 1], dim=1)
            self_mask = torch.cat([self_mask, torch.ones(b, 1, dtype=torch.long)], dim=1)
            logits, k, v = lm.decode_cached(ids, key_positions, self_mask, keys, values,
                                            cross_k, cross_v, mask)
        keys = torch.cat([keys, k], dim=3)
        values = torch.cat([values, v], dim=3)
    return tokens, torch.stack(step_logits)
