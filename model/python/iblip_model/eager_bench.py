"""The eager baseline of iblip-engine-bench: our PyTorch model with a Hugging
Face-style generate loop (KV cache, greedy), sequential and in static batches
of 8 padded to the longest. Same workload shape as the C++ bench.

    PYTHONPATH=model/python /usr/bin/python3 -m iblip_model.eager_bench --checkpoint HF_DIR
        [--lengths 32,200,...] [--dtype fp32|bf16|int8] [--json]

--lengths gives each request's output length (bench/run passes its chat
workload's); --dtype runs the eager model in a package's weight format (as
model/export makes it), so that server and eager loop compare like with
like; --json prints the figures as one JSON object instead of a table.
"""

import argparse
import json
import random
import statistics
import time

import torch

from iblip_model.export import DTYPES
from iblip_model.modeling.instructblip import greedy_generate, load_pretrained

WORDS = ("what is the color of shape in this image describe picture left right how many are "
         "there").split()


def workload(count, min_tokens, max_tokens, vocab):
    rng = random.Random(17)
    prompts = [[2] + [rng.randrange(3, min(vocab, 900)) for _ in range(6 + rng.randrange(15))]
               for _ in range(count)]
    lengths = [max_tokens if count == 1 else min_tokens + (max_tokens - min_tokens) * i // (count - 1)
               for i in range(count)]
    return prompts, lengths


def run(model, prompts, lengths, batch):
    size = model.config.vision.image_size
    tokens = 0
    start = time.monotonic()
    for i in range(0, len(prompts), batch):
        chunk, chunk_lengths = prompts[i:i + batch], lengths[i:i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in chunk])  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        word = min(150, model.config.qformer.vocab_size - 2)  # any in-vocabulary id
        qids = torch.tensor([[101, word, 102]] * len(chunk))
        pixels = torch.zeros(len(chunk), 3, size, size)
        steps = max(chunk_lengths)  # a static batch runs to its longest member
        greedy_generate(model, pixels, ids, mask, qids, torch.ones_like(qids), steps, [],
                                 pad_token_id=0)
        tokens += sum(chunk_lengths)
    wall = time.monotonic() - start
    return tokens / wall  # output tokens per second, end to end


def timed(function):
    start = time.monotonic()
    function()
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--min-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--lengths", help="comma-separated output lengths, one per request")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        torch.set_num_threads(torch.get_num_threads() if torch.get_num_threads() > 1 else 2)
    model = load_pretrained(args.checkpoint, DTYPES[args.dtype], quantize_int8=args.dtype == "int8")
    count = len(args.lengths.split(",")) if args.lengths else args.requests
    prompts, lengths = workload(count, args.min_tokens, args.max_tokens,
                                model.config.text.vocab_size)
    if args.lengths:
        lengths = [int(n) for n in args.lengths.split(",")]
    with torch.inference_mode():
        run(model, prompts[:1], [4], 1)  # warm-up
        # Decode phase of one stream: a full run minus a 1-token run (prefill),
        # each the median of 3 (single runs on this VM vary by 20%).
        prefill = statistics.median(timed(lambda: run(model, prompts[:1], [1], 1)) for _ in range(3))
        total = statistics.median(timed(lambda: run(model, prompts[:1], [args.max_tokens], 1))
                                  for _ in range(3))
        single_decode = (args.max_tokens - 1) / (total - prefill)
        sequential = run(model, prompts, lengths, 1)
        static8 = run(model, prompts, lengths, 8)
    if args.json:
        print(json.dumps({"single_stream_decode_tok_s": single_decode,
                          "single_stream_ttft_ms": prefill * 1000,
                          "sequential_tok_s": sequential, "static8_tok_s": static8,
                          "requests": count, "output_tokens": sum(lengths)}))
        return
    print("| eager PyTorch loop | tok/s |")
    print("|---|---|")
    print(f"| single stream, decode phase | {single_decode:.1f} |")
    print(f"| single stream, time to first token | {prefill * 1000:.0f} ms |")
    print(f"| sequential, {count} requests, output tok/s end to end | {sequential:.1f} |")
    print(f"| static batches of 8 padded to the longest, output tok/s end to end | {static8:.1f} |")


if __name__ == "__main__":
    main()
