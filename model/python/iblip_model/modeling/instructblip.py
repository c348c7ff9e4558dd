"""InstructBlipForConditionalGeneration: vision encoder -> Q-Former ->
language projection -> LLaMA or T5, loaded from a Hugging Face checkpoint."""

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


def _check_and_adapt(model, state, source):
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not any(p.match(k) for p in _IGNORED_KEYS)}
    text = model.config.text
    if (model.config.lm_family == "t5" and "language_model.lm_head.weight" not in state
            and text.tie_word_embeddings and "language_model.shared.weight" in state):
        state["language_model.lm_head.weight"] = state["language_model.shared.weight"]
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{source}: missing key '{missing[0]}'"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key '{unexpected[0]}'"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{source}: key '{name}' has shape {tuple(tensor.shape)}, "
                                  f"config.json implies {tuple(expected[name].shape)}")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: key '{name}' has dtype {tensor.dtype}, expected floats")
    return state


def load_pretrained(checkpoint_dir, dtype=torch.float32):
    """Our model with the checkpoint's weights, in eval mode, as `dtype`."""
    config = hf_config.load_config(checkpoint_dir)
    model = InstructBlipForConditionalGeneration(config)
    state = checkpoint.load_state_dict(checkpoint_dir)
    state = _check_and_adapt(model, state, checkpoint_dir)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return model.to(dtype).eval()


# -- eager generation (reference loop for tests and benchmarks) --------------

@torch.no_grad()
def greedy_generate(model, pixel_values, input_ids, attention_mask, qformer_input_ids,
                    qformer_attention_mask, max_new_tokens, eos_token_ids, pad_token_id=0):
    """Hugging Face-style greedy decoding with inputs_embeds = [soft prompt;
    prompt] (left padding allowed). Returns (new token ids per row, the
    logits of each step [steps,B,V])."""
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
