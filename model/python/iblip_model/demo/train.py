"""Trains the demo model: a tiny InstructBLIP (all parts: ViT, Q-Former,
projection, LLaMA) on synthetic visual questions (demo/shapes.py), and saves
it in the Hugging Face checkpoint layout, so it goes through model/export like
a real checkpoint. Deterministic for a seed, step count and worker count
(CPU: two data-parallel processes of one thread each).

    PYTHONPATH=model/python /usr/bin/python3 -m iblip_model.demo.train \
        --output model/demo-checkpoint [--steps 2800] [--seed 0]
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
    family="llama", queries=16, spm_pieces=400, eos_token_id=2,
    vision=dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=128, intermediate_size=256,
                num_hidden_layers=3, num_attention_heads=4),
    qformer=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 cross_attention_frequency=1, max_position_embeddings=64),
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128))
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
BOS = EOS = 2  # InstructBLIP-Vicuna layout: prompts start with </s>, answers end with it
EVAL_SEED = 424242  # the trainer's own evaluation; never used for training
# Positions and captions (which shape comes first) are the hardest: ask them
# more often.
TYPE_WEIGHTS = [1, 1, 1, 2, 2]


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
    """Training batches of fresh scenes: every image is rendered for the step
    that uses it, so the model never sees one twice and cannot memorize
    answers (with a fixed pool of 24,000 scenes it did: position accuracy
    on held-out scenes stayed 65% while the training loss said 90%; a
    500-step probe on fresh scenes reached 78%)."""

    def __init__(self, output_dir, seed):
        self.rng = random.Random(seed)
        self.lm = spm.SentencePieceProcessor()
        self.lm.Load(os.path.join(output_dir, "tokenizer.model"))
        self.qformer = QformerTokenizer(os.path.join(output_dir, "qformer_tokenizer", "vocab.txt"))

    def prompt_ids(self, instruction):
        return [BOS] + self.lm.encode(instruction)

    def batch(self, scenes, questions_per_scene):
        """`scenes` new images, each asked `questions_per_scene` questions (the
        vision encoder runs once per image, as the server's cache does), and
        what is in each quarter of each image and where the shape each
        question names is (for the auxiliary losses)."""
        drawn = [shapes.random_scene(self.rng) for _ in range(scenes)]
        pixels = torch.stack([pixel_values(shapes.render(scene, self.rng)) for scene in drawn])
        quarters = torch.stack([quarter_labels(scene) for scene in drawn])
        qformer, inputs, targets, named = [], [], [], []
        for scene in drawn:
            for _ in range(questions_per_scene):
                kind = self.rng.choices(shapes.TYPES, weights=TYPE_WEIGHTS)[0]
                _, instruction, answer = shapes.question(scene, self.rng, kind)
                prompt = self.prompt_ids(instruction)
                answer_ids = self.lm.encode(answer) + [EOS]
                qformer.append(self.qformer.encode(instruction))
                inputs.append(prompt + answer_ids[:-1])
                targets.append([-100] * (len(prompt) - 1) + answer_ids)
                named.append(named_labels(scene, instruction))
        return (pixels, pad(qformer, 0), pad(inputs, 0), pad(targets, -100)[0], quarters,
                torch.stack(named))


def pad(rows, value):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def quarter_labels(scene):
    """[4, 2]: (shape index or 4 = empty, color index or 6 = empty) per
    quarter, in reading order."""
    labels = torch.tensor([[len(shapes.SHAPES), len(shapes.COLORS)]] * 4)
    for obj in scene:
        labels[obj["quarter"]] = torch.tensor(
            [shapes.SHAPES.index(obj["shape"]), list(shapes.COLORS).index(obj["color"])])
    return labels


def named_labels(scene, instruction):
    """[2]: (quarter or 4 = absent, color index or 6 = absent) of the shape
    the instruction names; -100 (ignored) when it names none."""
    shape = next((s for s in shapes.SHAPES if s in instruction), None)
    if shape is None:
        return torch.tensor([-100, -100])
    obj = next((o for o in scene if o["shape"] == shape), None)
    if obj is None:
        return torch.tensor([4, len(shapes.COLORS)])
    return torch.tensor([obj["quarter"], list(shapes.COLORS).index(obj["color"])])


class PatchProbe(torch.nn.Module):
    """Training-only auxiliary heads (not exported): from every patch token
    of the ViT's output, predict the shape and color in the patch's image
    quarter, and which quarter the patch is in. Direct, dense supervision
    teaches the ViT what is where far faster than the answers' gradient
    alone, which must first pass the LM and the Q-Former; and it keeps each
    patch's position readable, which position and caption answers need (a
    probe on quarter means instead left single-shape position answers near
    chance)."""

    def __init__(self, hidden, grid):
        super().__init__()
        self.shape = torch.nn.Linear(hidden, len(shapes.SHAPES) + 1)
        self.color = torch.nn.Linear(hidden, len(shapes.COLORS) + 1)
        self.quarter = torch.nn.Linear(hidden, 4)
        cells = torch.arange(grid * grid)
        # The quarter (reading order) of each patch of the grid x grid image.
        self.register_buffer("patch_quarter", (cells // grid) // (grid // 2) * 2
                             + (cells % grid) // (grid // 2), persistent=False)

    def forward(self, image_embeds, labels):
        patches = image_embeds[:, 1:]
        per_patch = labels[:, self.patch_quarter]  # [b, patches, 2]
        ce = torch.nn.functional.cross_entropy
        return (ce(self.shape(patches).flatten(0, 1), per_patch[..., 0].flatten())
                + ce(self.color(patches).flatten(0, 1), per_patch[..., 1].flatten())
                + ce(self.quarter(patches).flatten(0, 1),
                     self.patch_quarter.repeat(patches.shape[0])))


class SlotProbe(torch.nn.Module):
    """Training-only auxiliary heads (not exported): Q-Former query i (i < 4)
    predicts the shape and color in image quarter i, whatever the
    instruction. The soft prompt then starts with an ordered, bound
    description of the scene, so the LM's part of color, presence and
    caption answers becomes a lookup (a 600-step probe: mean held-out
    accuracy 60% without, 70% with)."""

    def __init__(self, hidden):
        super().__init__()
        self.shape = torch.nn.Linear(hidden, len(shapes.SHAPES) + 1)
        self.color = torch.nn.Linear(hidden, len(shapes.COLORS) + 1)

    def forward(self, query_outputs, labels):
        slots = query_outputs[:, :4]
        ce = torch.nn.functional.cross_entropy
        return (ce(self.shape(slots).flatten(0, 1), labels[..., 0].flatten())
                + ce(self.color(slots).flatten(0, 1), labels[..., 1].flatten()))


class NamedProbe(torch.nn.Module):
    """Training-only auxiliary heads (not exported): Q-Former query 4 (the
    first after the slots) predicts where the shape the instruction names
    is (a quarter, or absent) and its color. This is the instruction-aware
    lookup that presence, color and position answers need, supervised
    directly: from the answers' gradient alone, balanced presence questions
    stayed at chance for 2,100 steps, the model matching the asked shape
    against the scene last of all."""

    QUERY = 4

    def __init__(self, hidden):
        super().__init__()
        self.quarter = torch.nn.Linear(hidden, 5)
        self.color = torch.nn.Linear(hidden, len(shapes.COLORS) + 1)

    def forward(self, query_outputs, labels):
        query = query_outputs[:, self.QUERY]
        ce = torch.nn.functional.cross_entropy
        return (ce(self.quarter(query), labels[:, 0], ignore_index=-100)
                + ce(self.color(query), labels[:, 1], ignore_index=-100))


def loss_of(model, pixels, qformer, inputs, targets, quarters=None, named=None, probe=None,
            slots=None, named_probe=None):
    vision = model.vision_model(pixels)
    aux = probe(vision, quarters) if probe is not None else 0.0
    questions_per_image = qformer[0].shape[0] // pixels.shape[0]
    image_embeds = vision.repeat_interleave(questions_per_image, 0)
    queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    hidden = model.qformer(qformer[0], qformer[1], queries, image_embeds)
    if slots is not None:
        aux = aux + slots(hidden, quarters.repeat_interleave(questions_per_image, 0))
    if named_probe is not None:
        aux = aux + named_probe(hidden, named)
    soft = model.language_projection(hidden[:, : model.config.num_query_tokens])
    embeds = torch.cat([soft, model.embed(inputs[0])], dim=1)
    queries = soft.shape[1]
    mask = torch.cat([torch.ones(inputs[1].shape[0], queries, dtype=torch.long), inputs[1]], dim=1)
    positions = torch.arange(mask.shape[1])[None].expand(mask.shape[0], -1)
    hidden, _, _ = model.language_model.forward_cached(embeds, mask, positions, None, None)
    logits = model.language_model.logits(hidden[:, queries:])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100) + aux


def build_model(config, seed):
    """The untrained model, the same in every process for a seed: seeded
    before it is built, as its default initialization draws from torch's
    generator, whose start state is not fixed across processes here (two
    runs of the same command once trained different models)."""
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config)
    initialize(model, seed)
    return model


def initialize(model, seed):
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "class_embedding" in name or "position_embedding" in name:
            torch.nn.init.normal_(p, std=0.02)
    # Distinct queries from the start: at BLIP-2's std of 0.02 the 16 queries
    # are near copies, attend alike and carry one vector of information (a
    # 400-step probe: color-question loss 0.72 at std 0.02, 0.46 at std 1).
    torch.nn.init.normal_(model.query_tokens, std=1.0)
    # Where a patch is decides position and caption order answers: start the
    # ViT from a 2-D sine-cosine grid (as MAE does) instead of learning it from noise.
    with torch.no_grad():
        embedding = model.vision_model.embeddings.position_embedding
        side = SPEC["vision"]["image_size"] // SPEC["vision"]["patch_size"]
        embedding[0, 1:] += 0.5 * sincos_grid(side, embedding.shape[-1])


def sincos_grid(side, dim):
    quarter = dim // 4
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32),
                                torch.arange(side, dtype=torch.float32), indexing="ij")
    parts = []
    for axis in (rows.reshape(-1), cols.reshape(-1)):
        angles = axis[:, None] * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def evaluate(model, batcher, count, seed=EVAL_SEED):
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


def train_worker(rank, args, port):
    """One of `args.workers` data-parallel processes (1 torch thread each:
    this model is too small for intra-op threads to pay, so two processes
    use two cores twice as well). Gradients are averaged with one gloo
    all-reduce per step; rank 0 reports, saves and evaluates."""
    torch.set_num_threads(1)
    distributed = args.workers > 1
    if distributed:
        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.workers)
    start = time.monotonic()
    config = hf_config.load_config(args.output)
    model = build_model(config, args.seed)  # identical on every rank
    batcher = Batcher(args.output, args.seed * 1000 + rank)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.workers} "
        "workers", flush=True)
    vision = SPEC["vision"]
    probe = PatchProbe(vision["hidden_size"], vision["image_size"] // vision["patch_size"])
    slots = SlotProbe(SPEC["qformer"]["hidden_size"])
    named = NamedProbe(SPEC["qformer"]["hidden_size"])
    parameters = [p for m in (model, probe, slots, named) for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    warmup = 200
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    model.train()
    for step in range(args.steps):
        loss = loss_of(model, *batcher.batch(args.scenes_per_batch, args.questions_per_scene),
                       probe=probe, slots=slots, named_probe=named)
        optimizer.zero_grad()
        loss.backward()
        if distributed:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
            flat = torch.cat([g.reshape(-1) for g in grads])
            torch.distributed.all_reduce(flat)
            flat /= args.workers
            offset = 0
            for p, g in zip(parameters, grads):
                p.grad = flat[offset: offset + g.numel()].view_as(p).clone()
                offset += g.numel()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.4f} ({time.monotonic() - start:.0f} s)", flush=True)
        if rank == 0 and args.eval_every and step % args.eval_every == args.eval_every - 1:
            model.eval()
            log("  held-out accuracy:", evaluate(model, batcher, 100), flush=True)
            model.train()
    if rank == 0:
        model.eval()
        checkpoint.save_state_dict(
            args.output, {k: v.detach().clone() for k, v in model.state_dict().items()}, "bin")
        log(f"trained in {time.monotonic() - start:.0f} s", flush=True)
        log("held-out accuracy:", evaluate(model, batcher, 300), flush=True)
    if distributed:
        torch.distributed.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=2800)
    parser.add_argument("--workers", type=int, default=2, help="data-parallel processes")
    parser.add_argument("--scenes-per-batch", type=int, default=24, help="per worker")
    parser.add_argument("--questions-per-scene", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=0, help="steps between quick evaluations")
    args = parser.parse_args()
    build_checkpoint_files(args.output, args.seed)
    if args.workers == 1:
        train_worker(0, args, 0)
        return
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(train_worker, args=(args, port), nprocs=args.workers)


if __name__ == "__main__":
    main()
