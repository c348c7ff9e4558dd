"""The exported modules on a CUDA GPU (run on a machine that has one; the
project builds and tests without it): the fixtures through fp32 and bf16
packages on the GPU against Hugging Face's fp32 logits, and batch-1 decode
and vision-encoder speed of the medium model's packages there.

    python3 bench/cuda_check.py --fixtures DIR [--out FILE.json]

Uses whatever torch the machine has (the packages are exported there with
it, by our own model/export code).
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "model", "python"))

import torch  # noqa: E402

from iblip_model import random_checkpoint  # noqa: E402
from iblip_model.export import export  # noqa: E402
from iblip_model.format_quality import against_fixtures  # noqa: E402
from iblip_model.package_runner import PackageRunner  # noqa: E402


def sync(runner):
    if runner.device.type == "cuda":
        torch.cuda.synchronize()


def timed_decode(runner, steps):
    """Batch-1 greedy decode of `steps` tokens after a short prompt: tok/s."""
    manifest = runner.manifest
    size = manifest["image"]["size"]
    pixels = torch.randn(1, 3, size, size)
    words = manifest["qformer_vocab_size"]
    qids = torch.randint(words // 2, words - 1, (1, 8))
    prompt = torch.randint(3, manifest["lm_vocab_size"] - 1, (1, 8))
    soft = runner.soft_prompt(pixels, qids, torch.ones_like(qids))
    runner.generate(soft, prompt, 4, -1)  # warm-up
    sync(runner)
    start = time.perf_counter()
    tokens, _ = runner.generate(soft, prompt, steps, -1)
    sync(runner)
    decode = (time.perf_counter() - start)
    with torch.no_grad():
        batch = pixels.to(runner.device).expand(8, -1, -1, -1).contiguous()
        runner.vision(batch)
        sync(runner)
        start = time.perf_counter()
        for _ in range(5):
            runner.vision(batch)
        sync(runner)
        vision_ms = (time.perf_counter() - start) / 5 * 1000
    return {"decode_tok_s": len(tokens) / decode, "vision_ms_batch8": vision_ms}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--out")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the parity figures
    torch.backends.cudnn.allow_tf32 = False
    cuda = args.device == "cuda"
    result = {"torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
    work = tempfile.mkdtemp()
    quiet = lambda _: None  # noqa: E731
    for name in ("tiny-llama", "tiny-t5"):
        for dtype in ("fp32", "bf16"):
            package = os.path.join(work, f"{name}-{dtype}")
            export(os.path.join(args.fixtures, "checkpoints", name), package, dtype, log=quiet)
            report = against_fixtures(PackageRunner(package, args.device), args.fixtures, name)
            result[f"{name}/{dtype}"] = report
            print(name, dtype, report, flush=True)
    checkpoint = os.path.join(work, "medium-ckpt")
    random_checkpoint.generate("medium", checkpoint)
    for dtype in ("fp32", "bf16") if cuda else ():
        package = os.path.join(work, f"medium-{dtype}")
        export(checkpoint, package, dtype, log=quiet)
        result[f"medium/{dtype}"] = timed_decode(PackageRunner(package, args.device), args.steps)
        print("medium", dtype, result[f"medium/{dtype}"], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
