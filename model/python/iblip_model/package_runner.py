"""Runs a model package's TorchScript modules from Python, one row at a
time, as the C++ engine calls them: for parity tests and for measuring what
a weight format (bf16, int8) does to the logits."""

import json
import os

import torch

from iblip_model import ops  # noqa: F401  (the language model calls iblip::paged_attention)


class PackageRunner:
    def __init__(self, package_dir, device="cpu"):
        with open(os.path.join(package_dir, "manifest.json"), encoding="utf-8") as f:
            self.manifest = json.load(f)
        modules = self.manifest["modules"]
        self.device = torch.device(device)
        load = lambda name: torch.jit.load(os.path.join(package_dir, modules[name]),  # noqa: E731
                                           map_location=self.device)
        self.vision, self.qformer, self.lm = load("vision_encoder"), load("qformer"), load(
            "language_model")
        self.llama = self.manifest["lm_family"] == "llama"
        self.decoder_start = self.manifest["generation"].get("decoder_start_token_id", 0) or 0

    @torch.no_grad()
    def soft_prompt(self, pixel_values, qformer_input_ids, qformer_attention_mask):
        d = self.device
        return self.qformer(self.vision(pixel_values.to(d)), qformer_input_ids.to(d),
                            qformer_attention_mask.to(d))

    @torch.no_grad()
    def generate(self, soft, prompt_ids, steps, eos, forced=None):
        """Greedy decoding of one row (soft [1,Q,H], prompt_ids [1,T]).
        With `forced` (token ids), those are fed back instead of the argmax
        (teacher forcing), so logits stay comparable after a disagreement.
        Returns (argmax ids, logits [steps,V] on the CPU)."""
        ids = lambda rows: torch.tensor(rows, device=self.device)  # noqa: E731
        embeds = torch.cat([soft, self.lm.embed(prompt_ids.to(self.device))], dim=1)
        ones = torch.ones(1, embeds.shape[1], dtype=torch.long, device=self.device)
        if self.llama:
            logits, keys, values = self.lm.prefill(
                embeds, ones, torch.arange(embeds.shape[1], device=self.device)[None])
        else:
            encoded = self.lm.encode(embeds, ones)
            cross_k, cross_v = self.lm.cross_kv(encoded)
            logits, keys, values = self.lm.decode(ids([[self.decoder_start]]), ids([[0]]), ids([[1]]),
                                                  None, None, cross_k, cross_v, ones)
        tokens, all_logits = [], []
        for step in range(steps):
            all_logits.append(logits[0].float().cpu())
            tokens.append(int(logits.argmax(-1)))
            fed = forced[step] if forced is not None else tokens[-1]
            if fed == eos or (forced is not None and step + 1 == len(forced)):
                break
            length = keys.shape[3] + 1
            step_ids, all_ones = ids([[fed]]), ones.new_ones(1, length)
            if self.llama:
                logits, k, v = self.lm.decode(step_ids, all_ones, ids([[length - 1]]), keys, values)
            else:
                logits, k, v = self.lm.decode(step_ids, torch.arange(length, device=self.device)[None],
                                              all_ones, keys, values, cross_k, cross_v, ones)
            keys, values = torch.cat([keys, k], 3), torch.cat([values, v], 3)
        return tokens, torch.stack(all_logits)
