"""Random-weight InstructBLIP checkpoints in the Hugging Face layout, for
tests, the build's test package and benchmarks (no weights can be downloaded
where this project is built).

    /usr/bin/python3 -m iblip_model.random_checkpoint --preset tiny-llama --output DIR
        [--format bin|safetensors] [--shard-mb N] [--dtype fp32|fp16|bf16] [--seed N]

Presets: tiny-llama, tiny-t5 (a few MB), medium (LLaMA family; vision 12x768,
Q-Former 12x768, LM 8x1024 with a 32001-row vocabulary: ~0.4 B parameters,
realistic enough for benchmarks), medium-t5 (the same vision and Q-Former with
a Flan-T5-shaped LM: d_model 1024, 8+8 layers, 16 heads, gated-GELU FFN 2816,
32128-row vocabulary: ~0.45 B parameters), vicuna-7b (the real
InstructBLIP-Vicuna-7B shapes: EVA ViT-g 39x1408, Q-Former 12x768, LLaMA
32x4096: ~7.9 B parameters; write it as --dtype bf16 --format safetensors
--shard-mb 2000, one shard in memory at a time: 16 GB on disk).
Deterministic from the seed (SentencePiece's file also records the path of
its temporary training text, so its bytes differ; its pieces and scores do
not). config.json
omits values equal to the Hugging Face class defaults, as real checkpoints do.
"""

import argparse
import json
import math
import os
import random
import tempfile

import torch

from iblip_model import checkpoint, hf_config
from iblip_model.modeling.instructblip import (InstructBlipForConditionalGeneration,
                                                uninitialized_weights)

WORDS = ("a an the is are what where which how many color shape image picture photo describe "
         "short caption question answer red green blue yellow orange purple white black gray "
         "circle square triangle star left right top bottom middle there of in on and or with "
         "one two three four yes no small large big this that unusual about write detailed").split()

PRESETS = {
    "tiny-llama": dict(
        family="llama", queries=8, spm_pieces=500,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
        qformer=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=512)),
    "tiny-t5": dict(
        family="t5", queries=8, spm_pieces=500,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
        qformer=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4),
        text=dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4)),
    "medium": dict(
        family="llama", queries=32, spm_pieces=1000, lm_vocab_size=32001,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        qformer=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                  max_position_embeddings=2048)),
    # Flan-T5-large's layer shape (d_model 1024, 16 heads x 64, d_ff 2816,
    # vocabulary padded to 32128) with 8 encoder and 8 decoder layers.
    "medium-t5": dict(
        family="t5", queries=32, spm_pieces=1000, lm_vocab_size=32128,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        qformer=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=8, num_decoder_layers=8, num_heads=16)),
    # Vision and Q-Former at the Hugging Face class defaults, as the real
    # checkpoint's config.json leaves them.
    "vicuna-7b": dict(
        family="llama", queries=32, spm_pieces=1000, lm_vocab_size=32001, vision={}, qformer={},
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=2048)),
}


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _train_sentencepiece(prefix, pieces, family, seed, lines=None):
    import sentencepiece as spm  # Debian's python3-sentencepiece

    rng = random.Random(seed)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as corpus:
        for line in lines or []:
            corpus.write(line + "\n")
        for _ in range(3000):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            words[0] = words[0].capitalize()
            corpus.write(" ".join(words) + rng.choice([".", "?", "!", ":"]) + "\n")
    try:
        common = dict(input=corpus.name, model_prefix=prefix, vocab_size=pieces,
                      character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2)
        if family == "llama":  # LLaMA: BPE with byte fallback, <unk> <s> </s>
            spm.SentencePieceTrainer.train(model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1,
                                           eos_id=2, pad_id=-1, **common)
        else:  # T5: unigram, <pad> </s> <unk>
            spm.SentencePieceTrainer.train(model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                           bos_id=-1, **common)
    finally:
        os.unlink(corpus.name)
    os.remove(prefix + ".vocab")
    processor = spm.SentencePieceProcessor()
    processor.Load(prefix + ".model")
    return processor.GetPieceSize()


def _qformer_vocab(extra_words=()):
    """A small bert-base-uncased-shaped vocab: specials at BERT's ids."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~0123456789abcdefghijklmnopqrstuvwxyz")
    vocab += ["##" + c for c in "0123456789abcdefghijklmnopqrstuvwxyz"]
    return vocab + sorted((set(WORDS) | set(extra_words)) - set(vocab))


def write_tokenizers(out, family, pieces, seed, lines=None, words=()):
    """LM SentencePiece (trained on WORDS plus `lines`) and the Q-Former vocab
    (plus `words`); returns (LM vocab size, Q-Former vocab size)."""
    name = "tokenizer.model" if family == "llama" else "spiece.model"
    size = _train_sentencepiece(os.path.join(out, name.rsplit(".", 1)[0]), pieces, family, seed, lines)
    if family == "llama":
        # InstructBLIP-Vicuna: bos = unk = </s>, [PAD] appended.
        added = {"[PAD]": size}
        _write_json(os.path.join(out, "tokenizer_config.json"), {
            "add_bos_token": True, "add_eos_token": False, "bos_token": "</s>", "eos_token": "</s>",
            "unk_token": "</s>", "pad_token": "[PAD]", "legacy": True, "truncation_side": "left",
            "tokenizer_class": "LlamaTokenizer", "processor_class": "InstructBlipProcessor"})
        _write_json(os.path.join(out, "special_tokens_map.json"), {
            "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "[PAD]"})
    else:
        added = {f"<extra_id_{i}>": size + 99 - i for i in range(100)}
        _write_json(os.path.join(out, "tokenizer_config.json"), {
            "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "extra_ids": 100,
            "legacy": True, "truncation_side": "left", "tokenizer_class": "T5Tokenizer",
            "processor_class": "InstructBlipProcessor"})
        _write_json(os.path.join(out, "special_tokens_map.json"), {
            "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    _write_json(os.path.join(out, "added_tokens.json"), added)

    qdir = os.path.join(out, "qformer_tokenizer")
    os.makedirs(qdir, exist_ok=True)
    vocab = _qformer_vocab(words)
    with open(os.path.join(qdir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    _write_json(os.path.join(qdir, "tokenizer_config.json"), {
        "do_lower_case": True, "truncation_side": "left", "bos_token": "[DEC]",
        "tokenizer_class": "BertTokenizer", "model_max_length": 512})
    _write_json(os.path.join(qdir, "added_tokens.json"), {"[DEC]": len(vocab)})
    return size + len(added) if family == "llama" else size + 100, len(vocab) + 1


def write_config_files(output_dir, spec, tokenizer_vocab, qformer_vocab, dtype="fp32"):
    """config.json (HF layout, class defaults omitted), generation and
    preprocessor configs for a spec like those in PRESETS."""
    lm_vocab = spec.get("lm_vocab_size", tokenizer_vocab)
    if spec["family"] == "llama":
        text = dict(model_type="llama", architectures=["LLaMAForCausalLM"], vocab_size=lm_vocab,
                    bos_token_id=0, eos_token_id=spec.get("eos_token_id", 1), pad_token_id=-1,
                    rms_norm_eps=1e-6, **spec["text"])
    else:
        text = dict(model_type="t5", architectures=["T5ForConditionalGeneration"],
                    vocab_size=lm_vocab, feed_forward_proj="gated-gelu", dense_act_fn="gelu",
                    tie_word_embeddings=False, decoder_start_token_id=0, eos_token_id=1,
                    pad_token_id=0, bos_token_id=1, **spec["text"])
    config = {
        "architectures": ["InstructBlipForConditionalGeneration"], "model_type": "instructblip",
        "num_query_tokens": spec["queries"],
        "vision_config": dict(model_type="instructblip_vision_model", **spec["vision"]),
        "qformer_config": dict(model_type="instructblip_qformer", vocab_size=qformer_vocab,
                               encoder_hidden_size=spec["vision"].get("hidden_size", 1408),
                               **spec["qformer"]),
        "text_config": text,
        "use_decoder_only_language_model": spec["family"] == "llama",
        "torch_dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype],
    }
    _write_json(os.path.join(output_dir, "config.json"), config)
    _write_json(os.path.join(output_dir, "generation_config.json"),
                {"bos_token_id": text["bos_token_id"], "eos_token_id": text["eos_token_id"],
                 "pad_token_id": text["pad_token_id"]})
    size = spec["vision"].get("image_size", 224)
    _write_json(os.path.join(output_dir, "preprocessor_config.json"), {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "BlipImageProcessor", "processor_class": "InstructBlipProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": size, "width": size}})


TIED = {"language_model.encoder.embed_tokens.weight": "language_model.shared.weight",
        "language_model.decoder.embed_tokens.weight": "language_model.shared.weight"}


def generate(preset, output_dir, fmt="bin", shard_mb=None, dtype="fp32", seed=0):
    spec = PRESETS[preset]
    os.makedirs(output_dir, exist_ok=True)
    tokenizer_vocab, qformer_vocab = write_tokenizers(output_dir, spec["family"],
                                                      spec["spm_pieces"], seed)
    write_config_files(output_dir, spec, tokenizer_vocab, qformer_vocab, dtype)
    with uninitialized_weights():  # shapes only: a 7B model's skeleton commits no memory
        model = InstructBlipForConditionalGeneration(hf_config.load_config(output_dir))
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    del model
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    generator = torch.Generator().manual_seed(seed)
    made = {}

    def make(name):
        """Called in state-dict order (the generator's sequence is the seed's)."""
        if name in TIED:
            return made[TIED[name]]
        shape = shapes[name]
        if name.endswith("bias"):
            value = torch.randn(shape, generator=generator) * 0.02
        elif "norm" in name or "LayerNorm" in name:
            value = 1 + torch.randn(shape, generator=generator) * 0.05
        else:
            value = torch.randn(shape, generator=generator) * 0.02
        value = value.to(torch_dtype)
        if name in TIED.values():
            made[name] = value
        return value

    names = list(shapes)
    if spec["family"] == "t5":  # what Hugging Face saves: tied copies of shared
        names += list(TIED)
    element = torch.empty((), dtype=torch_dtype).element_size()
    sizes = [(name, element * math.prod(shapes[TIED.get(name, name)])) for name in names]
    checkpoint.save_lazily(output_dir, sizes, make, fmt,
                           max_shard_bytes=shard_mb * (1 << 20) if shard_mb else None)
    return output_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--format", choices=["bin", "safetensors"], default="bin")
    parser.add_argument("--shard-mb", type=int, help="shard the weights into files of this size")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generate(args.preset, args.output, args.format, args.shard_mb, args.dtype, args.seed)


if __name__ == "__main__":
    main()
