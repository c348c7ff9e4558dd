"""Trains the demo model: a tiny InstructBLIP (all parts: ViT, Q-Former,
projection, LLaMA) on synthetic visual questions (demo/shapes.py), and saves
it in the Hugging Face checkpoint layout, so it goes through model/export like
a real checkpoint. Deterministic for a seed, step count and worker count
(CPU: two data-parallel processes of one thread each).

    PYTHONPATH=model/python /usr/bin/python3 -m iblip_model.demo.train \
        --output model/demo-checkpoint [--steps 3600] [--seed 0]
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
from iblip_model.demo import probes, shapes
from iblip_model.modeling.instructblip import InstructBlipForConditionalGeneration
from iblip_model.modeling.qformer import InstructBlipQFormerMultiHeadAttention
from iblip_model.modeling.vision import InstructBlipAttention

# 96 px in 8 px patches (a 12 x 12 grid): the smallest shape (1/10 of the
# short side of a 500 x 400 image, 2:1) is still ~11 x 7 pixels.
IMAGE_SIZE = 96
PATCH = 8
GRID = IMAGE_SIZE // PATCH
SPEC = dict(
    family="llama", queries=16, spm_pieces=400, eos_token_id=2,
    vision=dict(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=128, intermediate_size=256,
                num_hidden_layers=3, num_attention_heads=4),
    qformer=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 cross_attention_frequency=1, max_position_embeddings=64),
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128))
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
BOS = EOS = 2  # InstructBLIP-Vicuna layout: prompts start with </s>, answers end with it
# The trainer's own evaluation (its generator, this seed): never a training
# seed (those are seed * 1000 + rank), and not the held-out test's.
EVAL_SEED = 424242
# Position questions have seven templates, captions the longest answers.
TYPE_WEIGHTS = [1, 1, 1, 3, 1.5]


def pixel_values(image):
    """What the processor (and our C++ server) makes of an image (encoded
    bytes or a PIL image)."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
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
    """Training batches of fresh scenes: every image is drawn for the step
    that uses it, so the model never sees one twice and cannot memorize
    answers (with a fixed pool of 24,000 scenes it did). Images are drawn
    at the model's input size, squashed as the processor squashes them,
    sometimes JPEG-compressed."""

    def __init__(self, output_dir, seed):
        self.rng = random.Random(seed)
        self.lm = spm.SentencePieceProcessor()
        self.lm.Load(os.path.join(output_dir, "tokenizer.model"))
        self.qformer = QformerTokenizer(os.path.join(output_dir, "qformer_tokenizer", "vocab.txt"))

    def prompt_ids(self, instruction):
        return [BOS] + self.lm.encode(instruction)

    def image(self, scene):
        image = shapes.render(scene, self.rng, size=(IMAGE_SIZE, IMAGE_SIZE), encode=False)
        if self.rng.random() < 0.2:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.rng.randint(60, 95))
            image = Image.open(buffer)
        return pixel_values(image)

    def question(self, scene):
        while True:
            kind = self.rng.choices(shapes.TYPES, weights=TYPE_WEIGHTS)[0]
            asked = shapes.question(scene, self.rng, kind)
            if asked is not None:
                return asked

    def batch(self, scenes, questions_per_scene):
        """`scenes` new images, each asked `questions_per_scene` questions (the
        vision encoder runs once per image, as the server's cache does), and
        the auxiliary labels (probes.py)."""
        drawn = [shapes.random_scene(self.rng) for _ in range(scenes)]
        pixels = torch.stack([self.image(scene) for scene in drawn])
        patches = [probes.patch_labels(scene, GRID) for scene in drawn]
        patches = tuple(torch.stack(part) for part in zip(*patches))
        labels = probes.SceneLabels()
        qformer, inputs, targets = [], [], []
        for scene in drawn:
            slots = labels.add_image(scene)
            for _ in range(questions_per_scene):
                _, instruction, answer, named = self.question(scene)
                prompt = self.prompt_ids(instruction)
                answer_ids = self.lm.encode(answer) + [EOS]
                qformer.append(self.qformer.encode(instruction))
                inputs.append(prompt + answer_ids[:-1])
                targets.append([-100] * (len(prompt) - 1) + answer_ids)
                labels.add_question(scene, slots, named)
        return (pixels, pad(qformer, 0), pad(inputs, 0), pad(targets, -100)[0], patches,
                labels.tensors(questions_per_scene))


def pad(rows, value):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


class ImageOnceCrossAttention(InstructBlipQFormerMultiHeadAttention):
    """The Q-Former's cross-attention, the same weights and result, for
    training batches that ask several questions per image: the image's
    keys and values are projected once per image, not once per question
    (a quarter of a step's time at 4 questions per image)."""

    def forward(self, hidden, key_value, mask):
        repeats = hidden.shape[0] // key_value.shape[0]
        q = self._split(self.query(hidden))
        k = self._split(self.key(key_value)).repeat_interleave(repeats, 0)
        v = self._split(self.value(key_value)).repeat_interleave(repeats, 0)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1)
        self.probs = probs  # for probes.attention_loss
        context = torch.matmul(probs, v).permute(0, 2, 1, 3)
        return context.reshape(hidden.shape[0], hidden.shape[1], -1)


class RecordingAttention(InstructBlipAttention):
    """The ViT's self-attention, the same result, keeping its attention
    probabilities for probes.grouping_loss."""

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        probs = torch.softmax(torch.matmul(qkv[0], qkv[1].transpose(-1, -2)) * self.scale, dim=-1)
        self.probs = probs
        context = torch.matmul(probs, qkv[2]).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.projection(context)


GROUPING_LAYERS = (0, 1)  # head 0 of each is taught to pool a shape's patches


def prepare_for_training(model):
    """Swaps in training versions of some attention modules (same weights,
    same results; see ImageOnceCrossAttention, RecordingAttention)."""
    for layer in model.qformer.encoder.layer:
        if layer.has_cross_attention:
            layer.crossattention.attention.__class__ = ImageOnceCrossAttention
    for index in GROUPING_LAYERS:
        model.vision_model.encoder.layers[index].self_attn.__class__ = RecordingAttention


def loss_of(model, pixels, qformer, inputs, targets, patches=None, labels=None, patch_probe=None,
            query_probe=None):
    """The answers' loss plus the probes' (probes.py), and each part."""
    vision = model.vision_model(pixels)
    parts = {}
    if patch_probe is not None:
        parts.update(patch_probe(vision, patches))
        parts["grouping"] = sum(
            probes.grouping_loss(model.vision_model.encoder.layers[i].self_attn.probs[:, 0], patches)
            for i in GROUPING_LAYERS)
    queries = model.query_tokens.expand(qformer[0].shape[0], -1, -1)
    hidden = model.qformer(qformer[0], qformer[1], queries, vision)  # see ImageOnceCrossAttention
    if query_probe is not None:
        parts.update(query_probe(hidden, labels))
        first = model.qformer.encoder.layer[0].crossattention.attention
        parts["attention"] = probes.attention_loss(first.probs, patches, labels[-1])
    soft = model.language_projection(hidden[:, : model.config.num_query_tokens])
    embeds = torch.cat([soft, model.embed(inputs[0])], dim=1)
    queries = soft.shape[1]
    mask = torch.cat([torch.ones(inputs[1].shape[0], queries, dtype=torch.long), inputs[1]], dim=1)
    positions = torch.arange(mask.shape[1])[None].expand(mask.shape[0], -1)
    hidden, _, _ = model.language_model.forward_cached(embeds, mask, positions, None, None)
    logits = model.language_model.logits(hidden[:, queries:])
    parts["answer"] = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    return sum(parts.values()), parts


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
    """Greedy exact-match accuracy per question type on unseen scenes,
    drawn at their own size and encoded, as a client sends them."""
    from iblip_model.modeling.instructblip import greedy_generate
    right, total = {}, {}
    for image, kind, instruction, answer in shapes.examples(seed, count):
        pixels = pixel_values(image)[None]
        prompt = torch.tensor([batcher.prompt_ids(instruction)])
        qids = torch.tensor([batcher.qformer.encode(instruction)])
        tokens, _ = greedy_generate(model, pixels, prompt, torch.ones_like(prompt), qids,
                                    torch.ones_like(qids), 24, [EOS])
        text = batcher.lm.decode([t for t in tokens[0] if t != EOS and t < batcher.lm.GetPieceSize()])
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
    prepare_for_training(model)
    batcher = Batcher(args.output, args.seed * 1000 + rank)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.workers} "
        "workers", flush=True)
    patch_probe = probes.PatchProbe(SPEC["vision"]["hidden_size"], GRID)
    query_probe = probes.QueryProbe(SPEC["qformer"]["hidden_size"])
    parameters = [p for m in (model, patch_probe, query_probe) for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    warmup = 200
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    model.train()
    recent = {}
    for step in range(args.steps):
        loss, parts = loss_of(model, *batcher.batch(args.scenes_per_batch, args.questions_per_scene),
                              patch_probe=patch_probe, query_probe=query_probe)
        for name, value in parts.items():
            recent[name] = recent.get(name, 0.0) + value.item()
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
        if step % 100 == 99 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.3f} ({time.monotonic() - start:.0f} s wall, "
                f"{time.process_time():.0f} s CPU); last steps' mean: "
                + " ".join(f"{k} {v / (step % 100 + 1):.3f}" for k, v in recent.items()), flush=True)
            recent = {}
        if rank == 0 and args.eval_every and step % args.eval_every == args.eval_every - 1:
            model.eval()
            log("  accuracy on the trainer's evaluation set:", evaluate(model, batcher, 100), flush=True)
            model.train()
    if rank == 0:
        model.eval()
        checkpoint.save_state_dict(
            args.output, {k: v.detach().clone() for k, v in model.state_dict().items()}, "bin")
        if args.probes_out:
            torch.save({"patch": patch_probe.state_dict(), "query": query_probe.state_dict()},
                       args.probes_out)
        log(f"trained in {time.monotonic() - start:.0f} s wall, {time.process_time():.0f} s CPU "
            "(this process)", flush=True)
        if args.eval_count:
            log("accuracy on the trainer's evaluation set:", evaluate(model, batcher, args.eval_count),
                flush=True)
    if distributed:
        torch.distributed.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--workers", type=int, default=2, help="data-parallel processes")
    parser.add_argument("--scenes-per-batch", type=int, default=24, help="per worker")
    parser.add_argument("--questions-per-scene", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=0, help="steps between quick evaluations")
    parser.add_argument("--eval-count", type=int, default=300, help="questions in the final evaluation")
    parser.add_argument("--probes-out", help="also save the training-only probes here (for analysis)")
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
