"""The large-model check: the real InstructBLIP-Vicuna-7B architecture
(random weights; EVA ViT-g 39x1408, Q-Former 12x768, LLaMA 32x4096, 7.9 B
parameters) exported in the cheapest-memory format that keeps quality and
served on this machine:
export time and peak memory, server load time, resident memory,
single-stream and 4-stream tok/s. Writes its section into BENCHMARKS.md
(between the large-model markers).

    /usr/bin/python3 bench/large_model.py [--dtype bf16] [--tokens 24]

bf16 is that format here: int8 packages are half its size on disk, but
oneDNN keeps about two bytes a weight resident (its blocked copy of each
int8 weight and the original), as much as bf16, and their KV cache is fp32,
twice bf16's; bf16 also changes the logits least (BENCHMARKS.md, weight
formats). Needs ~16 GB of disk for the checkpoint (bf16 safetensors, written
one 1 GB shard at a time) and ~16 GB for the package, in build/bench/.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import BUILD, PYTHON, ROOT, WORK, images, log, machine, run, write_workload

sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from server_harness import start_server, stop_server  # noqa: E402

BEGIN, END = "<!-- large-model -->", "<!-- /large-model -->"


def timed(args):
    """Runs a child; (seconds, its own peak resident GiB)."""
    start = time.monotonic()
    child = subprocess.Popen(args, env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "model", "python")))
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{args[:3]} exited with {child.returncode}")
    return time.monotonic() - start, usage.ru_maxrss / 2**20


def resident_gib(pid):
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return (int(fields["VmRSS"].split()[0]) / 2**20, int(fields["VmHWM"].split()[0]) / 2**20)


def bench(server, workload, concurrency):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        run([os.path.join(BUILD, "client", "iblip-bench"), "--server", server.address,
             "--workload", workload, "--concurrency", str(concurrency), "--no-progress",
             "--duration", "3600", "--json-out", out.name])
        report = json.load(open(out.name))
    if report["succeeded"] != report["requests"]:
        raise RuntimeError(f"errors: {report['errors']}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "int8"])
    parser.add_argument("--tokens", type=int, default=24, help="output tokens per request")
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    r = {}
    checkpoint = os.path.join(WORK, "vicuna-7b-ckpt")
    if not os.path.exists(os.path.join(checkpoint, "model.safetensors.index.json")):
        log("writing the random vicuna-7b checkpoint (bf16, 1 GB shards)")
        r["generate_s"], r["generate_peak_gib"] = timed(
            [PYTHON, "-m", "iblip_model.random_checkpoint", "--preset", "vicuna-7b", "--output",
             checkpoint, "--dtype", "bf16", "--format", "safetensors", "--shard-mb", "1000"])
    package = os.path.join(WORK, f"vicuna-7b-{args.dtype}-pkg")
    if not os.path.exists(os.path.join(package, "manifest.json")):
        log(f"exporting it as {args.dtype}")
        r["export_s"], r["export_peak_gib"] = timed(
            [PYTHON, os.path.join(ROOT, "model", "export"), "--checkpoint", checkpoint, "--output",
             package, "--dtype", args.dtype, "--model-id", "bench/vicuna-7b"])
    r["package_gib"] = sum(os.path.getsize(os.path.join(package, n))
                           for n in os.listdir(package)) / 2**30
    manifest = json.load(open(os.path.join(package, "manifest.json")))
    per_token = (2 * manifest["lm_num_layers"] * manifest["lm_kv_heads"] * manifest["lm_head_dim"]
                 * (2 if args.dtype == "bf16" else 4))
    slots = 4
    kv_mib = per_token * manifest["max_context_tokens"] * slots // 2**20 + 1
    log(f"serving it: {slots} slots, {kv_mib} MiB of KV cache")
    start = time.monotonic()
    server = start_server("--threads", "2", "--scheduler.max-running-sequences", str(slots),
                          "--scheduler.kv-cache-mib", str(kv_mib), package_dir=package,
                          start_timeout=1800)
    try:
        r["load_s"] = time.monotonic() - start
        r["rss_loaded_gib"], _ = resident_gib(server.process.pid)
        pictures = images(6, "large")
        single = write_workload("large-single.jsonl", [(p, "Describe this image.", args.tokens)
                                                       for p in pictures[:2]])
        four = write_workload("large-four.jsonl", [(p, "Describe this image.", args.tokens)
                                                   for p in pictures[2:6]])
        log("single stream")
        report = bench(server, single, 1)
        r["single_decode_tok_s"] = 1000 / report["inter_token_latency"]["mean_ms"]
        r["single_ttft_ms"] = report["time_to_first_token"]["p50_ms"]
        r["single_output_tok_s"] = report["output_tokens_per_s"]
        log("4 streams")
        report = bench(server, four, 4)
        r["four_output_tok_s"] = report["output_tokens_per_s"]
        r["four_ttft_ms"] = report["time_to_first_token"]["p50_ms"]
        r["rss_gib"], r["rss_peak_gib"] = resident_gib(server.process.pid)
    finally:
        stop_server(server)
    log(json.dumps(r))
    write_section(args, r, manifest, kv_mib)


def write_section(args, r, manifest, kv_mib):
    lines = [
        BEGIN, "## Large model: Vicuna-7B architecture on this machine", "",
        f"Made by `bench/large_model.py --dtype {args.dtype} --tokens {args.tokens}`. Random weights "
        "in the real InstructBLIP-Vicuna-7B shapes (`random_checkpoint --preset vicuna-7b`: EVA "
        "ViT-g 39x1408, Q-Former 12x768, LLaMA 32x4096, 32001-row vocabulary, 7.9 B parameters; "
        "bf16 safetensors in 1 GB shards), exported with `--dtype "
        f"{args.dtype}`. Machine: {machine()}.", "",
        "| | |", "|---|---|"]
    if "generate_s" in r:
        lines.append(f"| writing the checkpoint (16 GB) | {r['generate_s']:.0f} s, peak "
                     f"{r['generate_peak_gib']:.1f} GiB resident |")
    if "export_s" in r:
        lines.append(f"| model/export --dtype {args.dtype} | {r['export_s']:.0f} s, peak "
                     f"{r['export_peak_gib']:.1f} GiB resident |")
    lines += [
        f"| package on disk | {r['package_gib']:.1f} GiB |",
        f"| server start to ready (load, KV cache) | {r['load_s']:.0f} s |",
        f"| resident after loading ({kv_mib} MiB of it KV cache: 4 slots x "
        f"{manifest['max_context_tokens']} positions) | {r['rss_loaded_gib']:.1f} GiB |",
        f"| resident after the runs (peak) | {r['rss_gib']:.1f} GiB ({r['rss_peak_gib']:.1f} GiB) |",
        f"| single stream: decode tok/s, TTFT | {r['single_decode_tok_s']:.2f} tok/s, "
        f"{r['single_ttft_ms'] / 1000:.1f} s |",
        f"| 4 streams: aggregate output tok/s, median TTFT | {r['four_output_tok_s']:.2f} tok/s, "
        f"{r['four_ttft_ms'] / 1000:.1f} s |", "", END]
    text = open(args.output).read() if os.path.exists(args.output) else ""
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + text[text.index(END) + len(END):].lstrip("\n")
    with open(args.output, "w") as f:
        f.write(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
