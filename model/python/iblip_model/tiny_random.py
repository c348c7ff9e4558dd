"""A tiny random-weight model package with the real package interface.

It lets the server, clients and tests run end to end before real checkpoints
are exported (its output is gibberish by design). Deterministic: the same
command writes the same weights and tokenizer.

    /usr/bin/python3 -m iblip_model.tiny_random --output DIR
"""

import argparse
import json
import math
import os
import random
import tempfile

import torch
from torch import nn

from iblip_model import package_writer

SEED = 1234
IMAGE_SIZE = 224
PATCH = 32
VISION_HIDDEN = 32
NUM_QUERY_TOKENS = 8
LM_HIDDEN = 64
LM_LAYERS = 2
LM_HEADS = 4
MAX_CONTEXT = 256
SPM_PIECES = 320  # 256 byte-fallback pieces + merges + specials
BOS_ID = 2        # Vicuna layout: prompts start with </s> (id 2)
EOS_ID = 2

WORDS = ("a an the is are what where which how many color shape image picture photo "
         "describe short caption question answer red green blue yellow orange purple "
         "white black circle square triangle star left right top bottom middle there "
         "of in on and or with one two three four yes no small large big this that").split()


class TinyVisionQformer(nn.Module):
    """Stand-in for vision encoder + Q-Former + projection: learned queries
    attend over image patches and instruction tokens."""

    hidden: torch.jit.Final[int]

    def __init__(self, qformer_vocab_size: int):
        super().__init__()
        self.hidden = VISION_HIDDEN
        self.patch_embedding = nn.Conv2d(3, VISION_HIDDEN, PATCH, PATCH)
        self.query_tokens = nn.Parameter(torch.randn(1, NUM_QUERY_TOKENS, VISION_HIDDEN))
        self.word_embeddings = nn.Embedding(qformer_vocab_size, VISION_HIDDEN)
        self.layernorm = nn.LayerNorm(VISION_HIDDEN)
        self.language_projection = nn.Linear(VISION_HIDDEN, LM_HIDDEN)

    def forward(self, pixel_values: torch.Tensor, qformer_input_ids: torch.Tensor,
                qformer_attention_mask: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        text = self.word_embeddings(qformer_input_ids)
        memory = torch.cat([patches, text], dim=1)
        keep = torch.cat([torch.ones(patches.shape[:2], dtype=torch.bool),
                          qformer_attention_mask != 0], dim=1)
        queries = self.query_tokens.expand(pixel_values.shape[0], -1, -1)
        scores = queries @ memory.transpose(1, 2) / math.sqrt(self.hidden)
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        attended = torch.softmax(scores, dim=-1) @ memory
        return self.language_projection(self.layernorm(queries + attended))


class DecoderLayer(nn.Module):
    hidden: torch.jit.Final[int]
    heads: torch.jit.Final[int]

    def __init__(self):
        super().__init__()
        self.hidden = LM_HIDDEN
        self.heads = LM_HEADS
        self.norm1 = nn.LayerNorm(LM_HIDDEN)
        self.qkv = nn.Linear(LM_HIDDEN, 3 * LM_HIDDEN)
        self.out = nn.Linear(LM_HIDDEN, LM_HIDDEN)
        self.norm2 = nn.LayerNorm(LM_HIDDEN)
        self.fc1 = nn.Linear(LM_HIDDEN, 4 * LM_HIDDEN)
        self.fc2 = nn.Linear(4 * LM_HIDDEN, LM_HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        head_dim = self.hidden // self.heads
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, self.hidden)
        x = x + self.out(attended)
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class TinyDecoder(nn.Module):
    """Decoder-only LM over [soft prompt; prompt; generated] (no KV cache)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, LM_HIDDEN)
        self.positions = nn.Parameter(torch.randn(1, MAX_CONTEXT, LM_HIDDEN) * 0.1)
        self.layers = nn.ModuleList([DecoderLayer() for _ in range(LM_LAYERS)])
        self.norm = nn.LayerNorm(LM_HIDDEN)
        self.lm_head = nn.Linear(LM_HIDDEN, vocab_size, bias=False)
        # Random weights would pick byte-fallback pieces (raw bytes) as often
        # as words; steer towards word pieces so the gibberish is readable.
        bias = torch.zeros(vocab_size)
        bias[3:259] = -4.0
        self.register_buffer("vocab_bias", bias)

    @torch.jit.export
    def next_token_logits(self, soft_prompt: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        x = torch.cat([soft_prompt, self.embed_tokens(input_ids)], dim=1)
        x = x + self.positions[:, : x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x[:, -1])) + self.vocab_bias

    def forward(self, soft_prompt: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.next_token_logits(soft_prompt, input_ids)


def _train_tokenizer(path_prefix):
    import sentencepiece as spm  # Debian's python3-sentencepiece

    rng = random.Random(SEED)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as corpus:
        for _ in range(2000):
            corpus.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + ".\n")
    try:
        spm.SentencePieceTrainer.train(
            input=corpus.name, model_prefix=path_prefix, vocab_size=SPM_PIECES,
            model_type="bpe", byte_fallback=True, character_coverage=1.0,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
            num_threads=1, minloglevel=2)
    finally:
        os.unlink(corpus.name)


def _qformer_vocab():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    punct = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    return specials + punct + chars + ["##" + c for c in chars] + sorted(set(WORDS))


def build(output_dir):
    os.makedirs(output_dir, exist_ok=True)
    torch.manual_seed(SEED)
    _train_tokenizer(os.path.join(output_dir, "lm_tokenizer"))
    os.remove(os.path.join(output_dir, "lm_tokenizer.vocab"))
    vocab = _qformer_vocab()
    with open(os.path.join(output_dir, "qformer_vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")

    pad_id = SPM_PIECES
    lm_vocab_size = SPM_PIECES + 1
    vision = TinyVisionQformer(len(vocab)).eval()
    decoder = TinyDecoder(lm_vocab_size).eval()
    torch.jit.script(vision).save(os.path.join(output_dir, "vision.pt"))
    torch.jit.script(decoder).save(os.path.join(output_dir, "language_model.pt"))

    package_writer.write_manifest(
        output_dir, model_id="iblip/tiny-random", lm_family="llama", dtype="fp32",
        num_query_tokens=NUM_QUERY_TOKENS, lm_vocab_size=lm_vocab_size,
        qformer_vocab_size=len(vocab), max_context_tokens=MAX_CONTEXT, image_size=IMAGE_SIZE,
        lm_tokenizer={"file": "lm_tokenizer.model", "bos_token_id": BOS_ID, "append_eos": False,
                      "eos_token_id": EOS_ID, "pad_token_id": pad_id,
                      "added_tokens": {"[PAD]": pad_id}},
        qformer_tokenizer={"vocab_file": "qformer_vocab.txt", "lowercase": True, "max_length": 512},
        eos_token_ids=[EOS_ID],
        modules={"vision": "vision.pt", "language_model": "language_model.pt"})
    _write_reference(output_dir, vision, decoder, vocab)


def _write_reference(output_dir, vision, decoder, vocab):
    """Python outputs on a fixed input, for the C++ runtime's parity test."""
    qformer_ids = [vocab.index("[CLS]"), vocab.index("what"), vocab.index("[SEP]")]
    ids = [BOS_ID, 5, 17, 42]
    pixel_fill = 0.25
    with torch.no_grad():
        pixels = torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), pixel_fill)
        qids = torch.tensor([qformer_ids])
        soft_prompt = vision(pixels, qids, torch.ones_like(qids))
        logits = decoder.next_token_logits(soft_prompt, torch.tensor([ids]))[0]
    reference = {"pixel_fill": pixel_fill, "qformer_input_ids": qformer_ids, "input_ids": ids,
                 "logits": [float(x) for x in logits], "argmax": int(logits.argmax())}
    with open(os.path.join(output_dir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="package directory to write")
    build(parser.parse_args().output)


if __name__ == "__main__":
    main()
