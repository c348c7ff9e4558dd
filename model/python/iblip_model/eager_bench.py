"""The eager baseline of the server's benchmarks: our PyTorch model (LLaMA or
T5 family) with a Hugging Face-style generate loop (greedy; the KV cache
grows by concatenation each step, as transformers' DynamicCache does), fed
the very requests the server gets: the same JPEG files, prompts and output
lengths, read from iblip-bench's workload format (JSON lines of {"image":
PATH, "prompt": TEXT, "parameters": {"max_new_tokens": N, ...}}).

    PYTHONPATH=model/python /usr/bin/python3 -m iblip_model.eager_bench --checkpoint HF_DIR
        [--single WORKLOAD.jsonl] [--batch WORKLOAD.jsonl] [--batch-size 8]
        [--dtype fp32|bf16|int8] [--threads N] [--json]

--single: one stream per request, one after the other. Time to first token
    is measured from the JPEG's bytes in memory: preprocessing as Hugging
    Face's InstructBlipProcessor does it (PIL: open, convert RGB, resize to
    the model's size with BICUBIC, rescale, normalize; both tokenizers), the
    vision encoder, the Q-Former, the language model's prefill and the first
    token's choice. The decode step is the time between consecutive tokens
    of the stream (median over every step of every request).
--batch: static batches of --batch-size requests in file order, each padded
    to its longest prompt and run to its longest output, preprocessing
    included; output tokens per second from the first batch's start to the
    last one's end.
The first request of each mode runs once untimed first (warm-up).
--dtype runs the model in a package's weight format (as model/export makes
it); --json prints one JSON object instead of a table.
"""

import argparse
import io
import json
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

from iblip_model.demo.train import QformerTokenizer
from iblip_model.export import DTYPES
from iblip_model.modeling.instructblip import greedy_generate, load_pretrained


def load_requests(path):
    """[(jpeg bytes, prompt, output tokens)] from a workload file; an image
    path is relative to the file's folder."""
    requests = []
    with open(path, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            entry = json.loads(line)
            image = os.path.join(os.path.dirname(os.path.abspath(path)), entry["image"])
            with open(image, "rb") as picture:
                data = picture.read()
            tokens = entry.get("parameters", {}).get("max_new_tokens", 64)
            requests.append((data, entry.get("prompt", ""), int(tokens)))
    return requests


class Processor:
    """What InstructBlipProcessor does to an image and a prompt, from the
    checkpoint's preprocessor_config.json and tokenizer files (slow
    tokenizers: SentencePiece for the LM, BERT WordPiece for the Q-Former)."""

    def __init__(self, checkpoint_dir, family):
        import sentencepiece  # Debian's python3-sentencepiece

        def read(name):
            with open(os.path.join(checkpoint_dir, name), encoding="utf-8") as f:
                return json.load(f)

        image = read("preprocessor_config.json")
        self.size = (image["size"]["width"], image["size"]["height"])
        self.resample = Image.Resampling(image.get("resample", 3))
        self.rescale = image.get("rescale_factor", 1 / 255)
        self.mean = np.array(image["image_mean"], dtype=np.float32)
        self.std = np.array(image["image_std"], dtype=np.float32)
        self.lm = sentencepiece.SentencePieceProcessor()
        self.lm.Load(os.path.join(checkpoint_dir,
                                  "tokenizer.model" if family == "llama" else "spiece.model"))
        tokens = read("tokenizer_config.json")
        # Vicuna: BOS (the config's bos_token, "</s>") first; Flan-T5: EOS last.
        self.prefix = ([self.lm.PieceToId(tokens["bos_token"])]
                       if family == "llama" and tokens.get("add_bos_token", True) else [])
        self.suffix = [] if family == "llama" else [self.lm.PieceToId(tokens["eos_token"])]
        self.qformer = QformerTokenizer(os.path.join(checkpoint_dir, "qformer_tokenizer",
                                                     "vocab.txt"))

    def pixels(self, jpeg):
        image = Image.open(io.BytesIO(jpeg)).convert("RGB").resize(self.size, self.resample)
        scaled = np.asarray(image, dtype=np.float32) * np.float32(self.rescale)
        return torch.from_numpy(((scaled - self.mean) / self.std).transpose(2, 0, 1).copy())

    def prompt_ids(self, text):
        return self.prefix + self.lm.EncodeAsIds(text) + self.suffix

    def qformer_ids(self, text):
        return self.qformer.encode(text)

    def __call__(self, requests):
        """greedy_generate's inputs for a batch: pixels, LM ids left-padded
        (as batched generation needs), Q-Former ids right-padded, masks."""
        pixels = torch.stack([self.pixels(jpeg) for jpeg, _, _ in requests])
        lm = [self.prompt_ids(prompt) for _, prompt, _ in requests]
        qformer = [self.qformer_ids(prompt) for _, prompt, _ in requests]
        width, qwidth = max(map(len, lm)), max(map(len, qformer))
        ids = torch.tensor([[0] * (width - len(row)) + row for row in lm])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in lm])
        qids = torch.tensor([row + [0] * (qwidth - len(row)) for row in qformer])
        qmask = torch.tensor([[1] * len(row) + [0] * (qwidth - len(row)) for row in qformer])
        return pixels, ids, mask, qids, qmask


def stream(model, processor, request):
    """One request alone: (time to first token, of which preprocessing,
    [gaps between tokens]), seconds."""
    arrivals = []
    start = time.perf_counter()
    inputs = processor([request])
    preprocessed = time.perf_counter()
    greedy_generate(model, *inputs, request[2], [],
                    on_token=lambda _: arrivals.append(time.perf_counter()))
    return (arrivals[0] - start, preprocessed - start,
            [b - a for a, b in zip(arrivals, arrivals[1:])])


def static_batches(model, processor, requests, size):
    """Output tokens per second of static batches of `size`, and the wall time."""
    start = time.perf_counter()
    for i in range(0, len(requests), size):
        chunk = requests[i:i + size]
        greedy_generate(model, *processor(chunk), max(r[2] for r in chunk), [])
    wall = time.perf_counter() - start
    return sum(r[2] for r in requests) / wall, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--single", help="workload of single-stream requests")
    parser.add_argument("--batch", help="workload run in static batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.single or args.batch):
        parser.error("give --single and/or --batch")
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.checkpoint, DTYPES[args.dtype], quantize_int8=args.dtype == "int8")
    processor = Processor(args.checkpoint, model.config.lm_family)
    result = {"dtype": args.dtype, "family": model.config.lm_family}
    with torch.inference_mode():
        if args.single:
            requests = load_requests(args.single)
            stream(model, processor, requests[0][:2] + (4,))  # warm-up
            ttfts, preprocessing, gaps = [], [], []
            for request in requests:
                ttft, preprocessed, steps = stream(model, processor, request)
                ttfts.append(ttft * 1000)
                preprocessing.append(preprocessed * 1000)
                gaps += [g * 1000 for g in steps]
            result.update(ttft_ms=ttfts, preprocess_ms=preprocessing,
                          decode_step_ms=statistics.median(gaps),
                          decode_step_mean_ms=statistics.mean(gaps), decode_steps=len(gaps))
        if args.batch:
            requests = load_requests(args.batch)
            warm = requests[:args.batch_size]
            static_batches(model, processor, [r[:2] + (2,) for r in warm], args.batch_size)
            tok_s, wall = static_batches(model, processor, requests, args.batch_size)
            result.update(static_tok_s=tok_s, static_wall_s=wall, batch_size=args.batch_size,
                          batch_requests=len(requests),
                          batch_output_tokens=sum(r[2] for r in requests))
    if args.json:
        print(json.dumps(result))
        return
    print(f"| eager loop, {args.dtype} | |")
    print("|---|---|")
    if args.single:
        print(f"| time to first token, median ms | {statistics.median(result['ttft_ms']):.0f} |")
        print(f"| of which preprocessing, median ms | "
              f"{statistics.median(result['preprocess_ms']):.1f} |")
        print(f"| decode step, median ms | {result['decode_step_ms']:.1f} |")
    if args.batch:
        print(f"| static batches of {args.batch_size}, {len(requests)} requests, output tok/s "
              f"| {result['static_tok_s']:.1f} |")


if __name__ == "__main__":
    main()
