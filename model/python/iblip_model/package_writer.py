"""Writes the manifest of a model package (format described in model/PACKAGE.md)."""

import json
import os

FORMAT_VERSION = 1

# OpenAI CLIP statistics, used by every InstructBLIP processor.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_manifest(output_dir, *, model_id, lm_family, dtype, num_query_tokens,
                   lm_vocab_size, qformer_vocab_size, max_context_tokens, image_size,
                   lm_tokenizer, qformer_tokenizer, eos_token_ids, modules,
                   image_mean=CLIP_MEAN, image_std=CLIP_STD, extra=None):
    """Writes package.json; every file named must already be in output_dir."""
    for name in [lm_tokenizer["file"], qformer_tokenizer["vocab_file"], *modules.values()]:
        path = os.path.join(output_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"package file missing: {path}")
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "lm_family": lm_family,
        "dtype": dtype,
        "num_query_tokens": num_query_tokens,
        "lm_vocab_size": lm_vocab_size,
        "qformer_vocab_size": qformer_vocab_size,
        "max_context_tokens": max_context_tokens,
        "image": {"size": image_size, "mean": list(image_mean), "std": list(image_std)},
        "lm_tokenizer": lm_tokenizer,
        "qformer_tokenizer": qformer_tokenizer,
        "generation": {"eos_token_ids": list(eos_token_ids)},
        "modules": modules,
    }
    if extra:
        manifest.update(extra)
    with open(os.path.join(output_dir, "package.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
