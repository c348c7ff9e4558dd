"""Trains the demo model: a tiny InstructBLIP (all parts: ViT, Q-Former,
projection, LLaMA) on synthetic visual questions (demo/shapes.py), and saves
it in the Hugging Face checkpoint layout, so it goes through model/export like
a real checkpoint. Deterministic for a seed and step count (CPU, 2 threads).

    PYTHONPATH=model/python /usr/bin/python3 -m iblip_model.demo.train \
        --output model/demo-checkpoint [--steps 5000] [--seed 0]
"""

import argparse
import io
import math
import os
import random
import time

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image

from iblip_model import checkpoint, hf_config, random_checkpoint
from iblip_model.demo import shapes
from iblip_model.modeling.instructblip import InstructBlipForConditionalGeneration

IMAGE_SIZE = 64
SPEC = dict(
    family="llama", queries=8, spm_pieces=400, eos_token_id=2,
    vision=dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=128, intermediate_size=256,
                num_hidden_layers=3, num_attention_heads=4),
    qformer=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 cross_attention_frequency=1, max_position_embeddings=64),
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128))
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
BOS = EOS = 2  # InstructBLIP-Vicuna layout: prompts start with </s>, answers end with it
HELD_OUT_SEED = 424242  # never used for training; the evaluation's seed


def pixel_values(encoded):
    """What the processor (and our C++ server) makes of the encoded image."""
    image = Image.open(io.BytesIO(encoded)).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE),
                                                                   Image.BICUBIC)
    x = (np.asarray(image).astype(np.float64) * (1 / 255)).astype(np.float32)
    return torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1).copy())


class QformerTokenizer:
    """BERT uncased basic + WordPiece, enough for the task's ASCII text (the
    C++ server's tokenizer gives the same ids)."""

    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.ids = {line.rstrip("\n"): i for i, line in enumerate(f)}

    def encode(self, text):
        words, current = [], ""
        for ch in text.lower():
            if ch.isspace() or (not ch.isalnum()):
                if current:
                    words.append(current)
                current = ""
                if not ch.isspace():
                    words.append(ch)
            else:
                current += ch
        if current:
            words.append(current)
        ids = [self.ids["[CLS]"]]
        for word in words:
            start, pieces = 0, []
            while start < len(word):
                for end in range(len(word), start, -1):
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in self.ids:
                        pieces.append(self.ids[piece])
                        start = end
                        break
                else:
                    pieces = [self.ids["[UNK]"]]
                    break
            ids += pieces
        return ids + [self.ids["[SEP]"]]


def build_checkpoint_files(output_dir, seed):
    os.makedirs(output_dir, exist_ok=True)
    lines = shapes.corpus_lines()
    words = sorted({w for line in lines for w in line.lower().replace("?", " ").replace(".", " ")
                    .replace(":", " ").split()})
    lm_vocab, qformer_vocab = random_checkpoint.write_tokenizers(
        output_dir, "llama", SPEC["spm_pieces"], seed, lines=lines * 4, words=words)
    random_checkpoint.write_config_files(output_dir, SPEC, lm_vocab, qformer_vocab)
    return hf_config.load_config(output_dir)


class Batcher:
    """Pre-rendered scenes; each batch asks a fresh random question per scene."""

    def __init__(self, output_dir, seed, scenes):
        self.rng = random.Random(seed)
        self.lm = spm.SentencePieceProcessor()
        self.lm.Load(os.path.join(output_dir, "tokenizer.model"))
        self.qformer = QformerTokenizer(os.path.join(output_dir, "qformer_tokenizer", "vocab.txt"))
        self.scenes, self.pixels = [], []
        for _ in range(scenes):
            scene = shapes.random_scene(self.rng)
            self.scenes.append(scene)
            self.pixels.append(pixel_values(shapes.render(scene, self.rng)))

    def prompt_ids(self, instruction):
        return [BOS] + self.lm.encode(instruction)

    def batch(self, size):
        picks = [self.rng.randrange(len(self.scenes)) for _ in range(size)]
        pixels = torch.stack([self.pixels[i] for i in picks])
        qformer, inputs, targets = [], [], []
        for i in picks:
            _, instruction, answer = shapes.question(self.scenes[i], self.rng)
            prompt = self.prompt_ids(instruction)
            answer_ids = self.lm.encode(answer) + [EOS]
            qformer.append(self.qformer.encode(instruction))
            inputs.append(prompt + answer_ids[:-1])
            targets.append([-100] * (len(prompt) - 1) + answer_ids)
        return pixels, pad(qformer, 0), pad(inputs, 0), pad(targets, -100)[0]


def pad(rows, value):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def loss_of(model, pixels, qformer, inputs, targets):
    soft = model.soft_prompt(pixels, qformer[0], qformer[1])
    embeds = torch.cat([soft, model.embed(inputs[0])], dim=1)
    queries = soft.shape[1]
    mask = torch.cat([torch.ones(inputs[1].shape[0], queries, dtype=torch.long), inputs[1]], dim=1)
    positions = torch.arange(mask.shape[1])[None].expand(mask.shape[0], -1)
    hidden, _, _ = model.language_model.forward_cached(embeds, mask, positions, None, None)
    logits = model.language_model.logits(hidden[:, queries:])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100)


def initialize(model, seed):
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("query_tokens") or "class_embedding" in name or "position_embedding" in name:
            torch.nn.init.normal_(p, std=0.02)


@torch.no_grad()
def evaluate(model, batcher, count, seed=HELD_OUT_SEED):
    """Greedy exact-match accuracy per question type on unseen scenes."""
    from iblip_model.modeling.instructblip import greedy_generate
    rng = random.Random(seed)
    right, total = {}, {}
    for _ in range(count):
        scene = shapes.random_scene(rng)
        kind, instruction, answer = shapes.question(scene, rng)
        pixels = pixel_values(shapes.render(scene, rng))[None]
        prompt = torch.tensor([batcher.prompt_ids(instruction)])
        qids = torch.tensor([batcher.qformer.encode(instruction)])
        tokens, _ = greedy_generate(model, pixels, prompt, torch.ones_like(prompt), qids,
                                    torch.ones_like(qids), 24, [EOS])
        text = batcher.lm.decode([t for t in tokens[0] if t != EOS])
        total[kind] = total.get(kind, 0) + 1
        right[kind] = right.get(kind, 0) + (text.strip() == answer)
    return {k: right[k] / total[k] for k in sorted(total)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.monotonic()
    config = build_checkpoint_files(args.output, args.seed)
    model = InstructBlipForConditionalGeneration(config)
    initialize(model, args.seed)
    batcher = Batcher(args.output, args.seed, args.scenes)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; data ready in "
          f"{time.monotonic() - start:.0f} s", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = 300
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    model.train()
    for step in range(args.steps):
        loss = loss_of(model, *batcher.batch(args.batch))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} ({time.monotonic() - start:.0f} s)", flush=True)
    model.eval()
    checkpoint.save_state_dict(args.output, {k: v.detach().clone() for k, v in model.state_dict().items()}, "bin")
    print(f"trained in {time.monotonic() - start:.0f} s; held-out accuracy:",
          evaluate(model, batcher, 300), flush=True)


if __name__ == "__main__":
    main()
