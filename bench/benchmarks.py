"""Benchmarks against the baselines, in one run, on the medium model
(random weights at a realistic shape: ViT 12x768, Q-Former 12x768, LLaMA
8x1024, 32k vocabulary), written to BENCHMARKS.md:

1. single stream: our server (gRPC, engine) vs our eager PyTorch model with a
   Hugging Face-style generate loop: decode tok/s and time to first token;
2. aggregate output tok/s on a chat-like workload (output lengths spread
   evenly over [32, 256] x scale; every second request a follow-up question
   on the image of the one before) at concurrency 1, 4, 8, 16, 32: continuous
   batching (the server) vs static batches of 8 padded to the longest vs
   sequential (both the eager loop, which has no image cache);
3. time to first token with an image-cache hit vs a miss;
4. the cost of gRPC + scheduling: the same closed-loop load in-process
   (iblip-engine-bench) and through the server (iblip-bench);
5. the memory-bandwidth roofline: a STREAM-like copy against the bytes of
   weights a batch-1 decode step reads times decode tok/s;
6. weight formats (model/export --dtype fp32 | bf16 | int8): package size,
   single-stream decode and TTFT (server and the eager loop in the same
   format), in-process throughput at 16 streams, the roofline share, and
   quality against fp32 (largest logit difference, greedy agreement) on the
   fixtures and on this model.

Sections 1-5 run the --dtype package (default bf16, the fastest format that
keeps quality on this CPU) against the eager loop in the same format.

Each figure is the median of --repeats runs, with the range. Run it on an
otherwise idle machine: bench/run
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("IBLIP_BUILD_DIR", os.path.join(ROOT, "build"))
WORK = os.path.join(BUILD, "bench")
PYTHON = "/usr/bin/python3"
MODEL_PYTHON = os.path.join(ROOT, "model", "python")
sys.path[:0] = [MODEL_PYTHON, os.path.join(ROOT, "tests", "python")]

from server_harness import scrape_metrics, start_server, stop_server  # noqa: E402

CONCURRENCY = [1, 4, 8, 16, 32]
THREADS = 2
FORMATS = ["fp32", "bf16", "int8"]
FIXTURES = os.environ.get("IBLIP_FIXTURES_DIR", os.path.join(ROOT, "tests", "fixtures"))


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=MODEL_PYTHON)
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env,
                          **kwargs).stdout


def median_and_range(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, digits=1):
    mid, low, high = median_and_range(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


# --- inputs ------------------------------------------------------------------

def bench_model(preset, dtype="fp32"):
    """The preset's random checkpoint and its package in `dtype`, made on
    first use."""
    checkpoint = os.path.join(WORK, f"{preset}-ckpt")
    package = os.path.join(WORK, f"{preset}-pkg" if dtype == "fp32" else f"{preset}-{dtype}-pkg")
    if not os.path.exists(os.path.join(checkpoint, "config.json")):
        log(f"generating the {preset} checkpoint")
        run([PYTHON, "-m", "iblip_model.random_checkpoint", "--preset", preset,
             "--output", checkpoint])
    if not os.path.exists(os.path.join(package, "manifest.json")):
        log(f"exporting the {preset} package ({dtype})")
        run([PYTHON, os.path.join(ROOT, "model", "export"), "--checkpoint", checkpoint,
             "--output", package, "--model-id", f"bench/{preset}", "--dtype", dtype])
    return checkpoint, package


def images(count, tag):
    """`count` distinct 320x240 JPEG photos-to-be (noise, so no two alike)."""
    import numpy as np
    from PIL import Image
    directory = os.path.join(WORK, f"images-{tag}")
    os.makedirs(directory, exist_ok=True)
    paths = []
    rng = np.random.default_rng(zlib.crc32(tag.encode()))
    for i in range(count):
        path = os.path.join(directory, f"{i}.jpg")
        if not os.path.exists(path):
            pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def chat_lengths(requests, scale):
    low, high = round(32 * scale), round(256 * scale)
    return [low + (high - low) * i // (requests - 1) for i in range(requests)]


def write_workload(name, entries):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        for image, prompt, tokens in entries:
            f.write(json.dumps({"image": image, "prompt": prompt, "parameters": {
                "max_new_tokens": tokens, "min_new_tokens": tokens}}) + "\n")
    return path


def chat_workload(requests, scale, tag):
    """Every second request asks a follow-up on the image of the one before;
    lengths are shuffled deterministically so neighbours differ."""
    lengths = chat_lengths(requests, scale)
    order = sorted(range(requests), key=lambda i: (i * 7919) % requests)
    pictures = images(requests // 2 + 1, tag)
    entries = []
    for n, i in enumerate(order):
        question = "Describe this image in detail." if n % 2 == 0 else "What else is in it?"
        entries.append((pictures[n // 2], question, lengths[i]))
    return write_workload(f"chat-{tag}.jsonl", entries), [e[2] for e in entries]


# --- runners -----------------------------------------------------------------

def server_bench(package, workload, concurrency, extra=()):
    """A fresh server (empty caches), iblip-bench's JSON report."""
    server = start_server("--threads", str(THREADS), "--scheduler.max-running-sequences", "32",
                          package_dir=package)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            run([os.path.join(BUILD, "client", "iblip-bench"), "--server", server.address,
                 "--workload", workload, "--concurrency", str(concurrency), "--no-progress",
                 "--duration", "3600", "--json-out", out.name, *extra])
            report = json.load(open(out.name))
        if report["succeeded"] != report["requests"]:
            raise RuntimeError(f"errors: {report['errors']}")
        return report, server
    except BaseException:
        stop_server(server)
        raise


def server_run(package, workload, concurrency, stages=None):
    """iblip-bench's report; with a `stages` list, also appends where the
    engine's time went (stage_seconds of the server's metrics)."""
    report, server = server_bench(package, workload, concurrency)
    try:
        if stages is not None:
            stages.append(stage_seconds(server, report))
    finally:
        stop_server(server)
    return report


def stage_seconds(server, report):
    """Engine time by stage from the server's histograms: the vision stage
    (vision encoder, or only the Q-Former on a cached image), prefill, and
    the rest of the run's wall time (decode steps and sampling)."""
    metrics = scrape_metrics(server)
    total = lambda name: sum(v for (n, _), v in metrics.items() if n == name)  # noqa: E731
    vision = total("iblip_vision_stage_duration_seconds_sum")
    prefill = total("iblip_prefill_duration_seconds_sum")
    return {"wall": report["wall_s"], "vision": vision, "prefill": prefill,
            "vision_batches": total("iblip_vision_stage_duration_seconds_count"),
            "prefills": total("iblip_prefill_duration_seconds_count")}


def eager(checkpoint, lengths, dtype):
    out = run([PYTHON, "-m", "iblip_model.eager_bench", "--checkpoint", checkpoint, "--threads",
               str(THREADS), "--lengths", ",".join(map(str, lengths)),
               "--max-tokens", str(max(lengths)), "--dtype", dtype, "--json"])
    return json.loads(out.strip().splitlines()[-1])


def engine_bench(package, concurrency, requests, tokens, images=(), prompt=None):
    """In-process engine; with images and a prompt, the same load the server
    gets (each image decoded and preprocessed per request)."""
    extra = ["--images", ",".join(images)] if images else []
    extra += ["--prompt", prompt] if prompt else []
    out = run([os.path.join(BUILD, "server", "iblip-engine-bench"), "--model", package,
               "--threads", str(THREADS), "--concurrency", str(concurrency),
               "--requests-per-level", str(requests), "--min-tokens", str(tokens),
               "--max-tokens", str(tokens), *extra])
    row = re.search(rf"^\| {concurrency} \| {requests} \| ([0-9.]+) \|", out, re.M)
    return float(row.group(1))


def copy_bandwidth():
    """GB/s of a STREAM-style copy (bytes read + written) over 1 GiB arrays,
    best of 5, on THREADS threads."""
    import torch
    torch.set_num_threads(THREADS)
    a = torch.ones(256 << 20)
    b = torch.empty_like(a)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        best = max(best, 2 * a.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best


def decode_weight_bytes(checkpoint, dtype):
    """Bytes of the LM weights one decode step reads (every layer, final norm,
    lm_head; not the embedding table, of which a step reads one row) in the
    package's format: int8 keeps norms fp32."""
    from iblip_model.checkpoint import load_state_dict
    size = {"fp32": lambda t: 4, "bf16": lambda t: 2, "int8": lambda t: 1 if t.dim() == 2 else 4}[dtype]
    return sum(t.numel() * size(t) for name, t in load_state_dict(checkpoint).items()
               if name.startswith("language_model.") and "embed_tokens" not in name)


def resident_gib(pid):
    """A process's resident memory, GiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 2**20
    return 0.0


def package_bytes(package):
    return sum(os.path.getsize(os.path.join(package, n)) for n in os.listdir(package)
               if n.endswith(".pt"))


def format_quality(package, *reference):
    return json.loads(run([PYTHON, "-m", "iblip_model.format_quality", "--package", package,
                           "--threads", str(THREADS), *reference]).strip().splitlines()[-1])


def fixture_quality(dtype):
    """Against Hugging Face's fp32 logits, on both fixture checkpoints."""
    from iblip_model.export import export
    results = {}
    for name in ("tiny-llama", "tiny-t5"):
        package = os.path.join(WORK, f"fixture-{name}-{dtype}")
        if not os.path.exists(os.path.join(package, "manifest.json")):
            export(os.path.join(FIXTURES, "checkpoints", name), package, dtype, log=lambda _: None)
        results[name] = format_quality(package, "--fixtures", FIXTURES, "--checkpoint-name", name)
    return results


def measure_formats(args, checkpoint, single_workload, single_tokens, tokens, r):
    """Section 6, one repeat: every format through the server and the eager
    loop, and in-process at 16 streams."""
    for dtype in FORMATS:
        package = bench_model(args.preset, dtype)[1]
        log(f"weight format {dtype}: single stream, eager, 16 streams in-process")
        f = r["formats"].setdefault(dtype, {"single": [], "ttft": [], "eager": [], "eager_ttft": [],
                                           "engine16": [], "rss": []})
        report, server = server_bench(package, single_workload, 1)
        f["rss"].append(resident_gib(server.process.pid))
        stop_server(server)
        f["single"].append(1000 / report["inter_token_latency"]["mean_ms"])
        f["ttft"].append(report["time_to_first_token"]["p50_ms"])
        e = eager(checkpoint, [single_tokens], dtype)
        f["eager"].append(e["single_stream_decode_tok_s"])
        f["eager_ttft"].append(e["single_stream_ttft_ms"])
        f["engine16"].append(engine_bench(package, 16, 32, tokens))


def profile_decode(package):
    return json.loads(run([PYTHON, "-m", "iblip_model.profile_decode", "--package", package,
                           "--threads", str(THREADS), "--json"]).strip().splitlines()[-1])


def format_qualities(args):
    """Section 6's quality columns (deterministic: measured once) and a
    profile of each format's decode step."""
    fp32 = bench_model(args.preset, "fp32")[1]
    result = {"fp32": {"bytes": package_bytes(fp32), "profile": profile_decode(fp32)}}
    for dtype in FORMATS[1:]:
        log(f"weight format {dtype}: quality against fp32, profile")
        package = bench_model(args.preset, dtype)[1]
        result[dtype] = {"fixtures": fixture_quality(dtype),
                         "model": format_quality(package, "--reference", fp32, "--prompts", "4"),
                         "bytes": package_bytes(package), "profile": profile_decode(package)}
    return result


# --- the report ---------------------------------------------------------------

def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo")
                  if line.startswith("MemTotal")) / 2**20
    import torch
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; {platform.platform()}; "
            f"torch {torch.__version__} (libtorch C++ in the server); {THREADS} intra-op threads")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.25,
                        help="output lengths [32, 256] x scale (1 = the full chat workload)")
    parser.add_argument("--requests", type=int, default=32, help="chat workload size")
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--preset", default="medium",
                        help="random_checkpoint preset (tiny-llama: a quick check of this script)")
    parser.add_argument("--dtype", choices=FORMATS, default="bf16",
                        help="weight format of sections 1-5 (server and eager loop alike)")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    checkpoint, package = bench_model(args.preset, args.dtype)
    started = time.monotonic()
    results = {"single": [], "ttft": [], "eager": [], "levels": {c: [] for c in CONCURRENCY},
               "hit": [], "miss": [], "engine": [], "grpc": [], "bandwidth": [], "formats": {},
               "stages16": [], "hit_stages": [], "miss_stages": []}
    single_tokens = round(128 * args.scale) * 2
    for repeat in range(args.repeats):
        log(f"repeat {repeat + 1}/{args.repeats}: single stream")
        single = write_workload("single.jsonl", [(p, "Describe this image.", single_tokens)
                                                 for p in images(4, f"single{repeat}")])
        report = server_run(package, single, 1)
        results["single"].append(1000 / report["inter_token_latency"]["mean_ms"])
        results["ttft"].append(report["time_to_first_token"]["p50_ms"])

        log("eager loop: single stream, sequential, static batches of 8")
        workload, lengths = chat_workload(args.requests, args.scale, f"chat{repeat}")
        results["eager"].append(eager(checkpoint, lengths, args.dtype))

        for level in CONCURRENCY:
            log(f"continuous batching at concurrency {level}")
            results["levels"][level].append(server_run(
                package, workload, level, results["stages16"] if level == 16 else None)
                ["output_tokens_per_s"])

        log("image cache: misses, then follow-ups on the same images")
        pictures = images(6, f"cache{repeat}")
        misses = write_workload("miss.jsonl", [(p, "Describe this image.", 4) for p in pictures])
        hits = write_workload("hit.jsonl", [(p, "What color is it?", 4) for p in pictures])
        report, server = server_bench(package, misses, 1)
        try:
            results["miss"].append(report["time_to_first_token"]["p50_ms"])
            misses_done = stage_seconds(server, report)
            results["miss_stages"].append(misses_done)
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                run([os.path.join(BUILD, "client", "iblip-bench"), "--server", server.address,
                     "--workload", hits, "--concurrency", "1", "--no-progress",
                     "--json-out", out.name])
                hit_report = json.load(open(out.name))
                results["hit"].append(hit_report["time_to_first_token"]["p50_ms"])
            hits_done = stage_seconds(server, hit_report)
            results["hit_stages"].append({k: hits_done[k] - misses_done[k]
                                          for k in ("vision", "prefill", "vision_batches", "prefills")})
        finally:
            stop_server(server)

        log("gRPC + scheduler overhead: in-process engine vs server, concurrency 8")
        tokens, count = round(128 * args.scale), 16
        pictures = images(count, f"overhead{repeat}")
        results["engine"].append(engine_bench(package, 8, count, tokens, pictures,
                                              "Describe this image."))
        same = write_workload("overhead.jsonl", [(p, "Describe this image.", tokens)
                                                 for p in pictures])
        results["grpc"].append(server_run(package, same, 8)["output_tokens_per_s"])
        results["bandwidth"].append(copy_bandwidth())
        measure_formats(args, checkpoint, single, single_tokens, tokens, results)

    results["quality"] = format_qualities(args)
    weights = {dtype: decode_weight_bytes(checkpoint, dtype) for dtype in FORMATS}
    write_report(args, results, weights, time.monotonic() - started)
    log(f"wrote {args.output}")


def write_report(args, r, weights, elapsed):
    eager_of = lambda key: [e[key] for e in r["eager"]]  # noqa: E731
    single, eager_single = statistics.median(r["single"]), statistics.median(
        eager_of("single_stream_decode_tok_s"))
    at16 = statistics.median(r["levels"][16])
    sequential, static8 = statistics.median(eager_of("sequential_tok_s")), statistics.median(
        eager_of("static8_tok_s"))
    hit, miss = statistics.median(r["hit"]), statistics.median(r["miss"])
    engine, grpc = statistics.median(r["engine"]), statistics.median(r["grpc"])
    bandwidth = statistics.median(r["bandwidth"])
    achieved = weights[args.dtype] * single / 1e9
    lines = [
        "# Benchmarks", "",
        f"Made by `bench/run --preset {args.preset} --repeats {args.repeats} --scale "
        f"{args.scale} --requests {args.requests} --dtype {args.dtype}` in {elapsed / 60:.0f} min. "
        f"Medians of {args.repeats} runs, range in brackets. Model: the random-weight preset "
        f"`{args.preset}` (medium: ViT 12x768, Q-Former 12x768, LLaMA 8x1024, 32k "
        f"vocabulary), sections 1-5 in {args.dtype} weights, server and eager loop alike "
        "(section 6 compares the formats).", "",
        f"Machine: {machine()}.", "",
        "## Single stream", "",
        "| | decode tok/s | time to first token, ms |", "|---|---|---|",
        f"| server (gRPC, engine) | {fmt(r['single'])} | {fmt(r['ttft'], 0)} |",
        f"| eager PyTorch loop | {fmt(eager_of('single_stream_decode_tok_s'))} | "
        f"{fmt(eager_of('single_stream_ttft_ms'), 0)} |", "",
        f"Server / eager decode: **{single / eager_single:.2f}x** (target >= 1.3x).", "",
        f"## Aggregate output tok/s, chat workload ({args.requests} requests, output "
        f"{chat_lengths(2, args.scale)[0]}-{chat_lengths(2, args.scale)[1]} tokens, "
        "half follow-ups on a seen image)", "",
        "| concurrency | continuous batching (server) |", "|---|---|"]
    lines += [f"| {c} | {fmt(r['levels'][c])} |" for c in CONCURRENCY]
    lines += [
        "", "| eager baselines | output tok/s |", "|---|---|",
        f"| sequential (one request at a time) | {fmt(eager_of('sequential_tok_s'))} |",
        f"| static batches of 8, padded to the longest | {fmt(eager_of('static8_tok_s'))} |", "",
        f"At 16 concurrent: **{at16 / sequential:.1f}x** sequential (target >= 8x), "
        f"**{at16 / static8:.1f}x** static batching (target >= 2x).", "",
        *stage_lines(r), "",
        "## Image cache", "",
        "| time to first token, ms | |", "|---|---|",
        f"| miss (new image) | {fmt(r['miss'], 0)} |",
        f"| hit (follow-up question on a cached image) | {fmt(r['hit'], 0)} |", "",
        f"Hit / miss: **{100 * hit / miss:.0f}%** (target <= 15%).", "",
        *cache_lines(r), "",
        "## gRPC + scheduler overhead (concurrency 8, equal lengths)", "",
        "The same 16 JPEGs, prompt and lengths in-process (decoded and preprocessed per request "
        "there too) and through the server.", "",
        "| | output tok/s |", "|---|---|",
        f"| in-process engine (iblip-engine-bench) | {fmt(r['engine'])} |",
        f"| through the server (iblip-bench over gRPC) | {fmt(r['grpc'])} |", "",
        f"Overhead: **{100 * (1 - grpc / engine):.1f}%** (target <= 5%).", "",
        "## Memory-bandwidth roofline (batch-1 decode)", "",
        f"- STREAM-like copy: {fmt(r['bandwidth'])} GB/s",
        f"- weights read per decode step ({args.dtype}): {weights[args.dtype] / 1e6:.0f} MB; "
        f"x {single:.1f} tok/s = "
        f"{achieved:.1f} GB/s", "",
        f"Batch-1 decode reaches **{100 * achieved / bandwidth:.0f}%** of the copy bandwidth "
        "(target >= 70%).", ""]
    lines += formats_report(r, weights, bandwidth)
    with open(args.output, "w") as f:
        f.write("\n".join(lines) + kept_large_model_section(args.output))


def stage_lines(r):
    """Where the engine's time went at 16 streams (medians over repeats)."""
    m = lambda key: statistics.median(s[key] for s in r["stages16"])  # noqa: E731
    wall, vision, prefill = m("wall"), m("vision"), m("prefill")
    return [f"Where the time went at 16 streams (server histograms; one engine thread runs "
            f"every stage in turn): the vision stage (vision encoder + Q-Former) "
            f"{vision:.1f} s of the run's {wall:.1f} s ({100 * vision / wall:.0f}%; "
            f"{m('vision_batches'):.0f} batches for {args_requests(r)} requests), prefills "
            f"{prefill:.1f} s ({100 * prefill / wall:.0f}%), decode steps and the rest "
            f"{wall - vision - prefill:.1f} s."]


def args_requests(r):
    return int(statistics.median(s["prefills"] for s in r["stages16"]))


def cache_lines(r):
    """What a hit and a miss spend before the first token, per request."""
    def per_request(stages):
        return (statistics.median(s["vision"] / max(1, s["vision_batches"]) for s in stages) * 1000,
                statistics.median(s["prefill"] / max(1, s["prefills"]) for s in stages) * 1000)
    miss_vision, miss_prefill = per_request(r["miss_stages"])
    hit_vision, hit_prefill = per_request(r["hit_stages"])
    return [f"Per request, from the server's histograms: a miss spends {miss_vision:.0f} ms in the "
            f"vision stage (vision encoder + Q-Former) and {miss_prefill:.0f} ms in prefill; a hit "
            f"{hit_vision:.0f} ms (the Q-Former alone: it reads the new instruction, so its output "
            f"cannot be reused across questions) and {hit_prefill:.0f} ms in prefill (the 32 query "
            "positions and the prompt)."]


def kept_large_model_section(path):
    """bench/large_model.py's section, which a run of this script keeps."""
    begin, end = "<!-- large-model -->", "<!-- /large-model -->"
    text = open(path).read() if os.path.exists(path) else ""
    if begin not in text:
        return ""
    return "\n" + text[text.index(begin):text.index(end) + len(end)] + "\n"


def formats_report(r, weights, bandwidth):
    q = r["quality"]
    lines = [
        "## Weight formats (model/export --dtype)", "",
        "Speed: single stream through the server and the eager loop in the same format; "
        "in-process engine at 16 concurrent streams. Resident memory: the server after a "
        "single-stream run, its KV cache pool included (`scheduler.kv_cache_mib`, 2 GiB). int8 keeps about two bytes a weight resident: oneDNN holds each "
        "Linear's int8 weight twice (its own blocked copy for the kernels and the original, "
        "for serialization); on disk it is one byte.", "",
        "| format | modules MB | server resident GiB | server decode tok/s | server TTFT ms | "
        "eager decode tok/s | eager TTFT ms | engine, 16 streams, tok/s | batch-1 roofline |",
        "|---|---|---|---|---|---|---|---|---|"]
    for dtype in FORMATS:
        f = r["formats"][dtype]
        share = weights[dtype] * statistics.median(f["single"]) / 1e9 / bandwidth
        lines.append(f"| {dtype} | {q[dtype]['bytes'] / 1e6:.0f} | {fmt(f['rss'], 2)} | "
                     f"{fmt(f['single'])} | "
                     f"{fmt(f['ttft'], 0)} | {fmt(f['eager'])} | {fmt(f['eager_ttft'], 0)} | "
                     f"{fmt(f['engine16'])} | {100 * share:.0f}% |")
    lines += [
        "", "Quality against fp32: greedy agreement (share of teacher-forced steps whose argmax is "
        "fp32's) and the largest logit difference; fixtures: Hugging Face's own fp32 logits "
        "(5 cases x 20 steps + a batch of 2, logits up to +-18); bench model: its fp32 package "
        "on 4 random prompts x 20 steps.", "",
        "| format | tiny-llama fixtures | tiny-t5 fixtures | bench model vs fp32 |",
        "|---|---|---|---|"]
    cell = lambda t: f"{100 * t['greedy_agreement']:.1f}%, {t['max_logit_diff']:.2f}"  # noqa: E731
    for dtype in FORMATS[1:]:
        fx = q[dtype]["fixtures"]
        lines.append(f"| {dtype} | {cell(fx['tiny-llama'])} | {cell(fx['tiny-t5'])} | "
                     f"{cell(q[dtype]['model'])} |")
    lines += [
        "", "Profile of a batch-1 decode step (`python -m iblip_model.profile_decode`, torch's "
        "profiler over the language model's decode with 64-80 cached positions; operator time, "
        "top 3 by own CPU time):", "",
        "| format | ms per step | top operators |", "|---|---|---|"]
    for dtype in FORMATS:
        p = q[dtype]["profile"]
        top = "; ".join(f"{o['op']} {100 * o['share']:.0f}% ({o['calls']} calls)" for o in p["ops"][:3])
        lines.append(f"| {dtype} | {p['step_ms']:.1f} | {top} |")
    return lines + [""]


if __name__ == "__main__":
    main()
