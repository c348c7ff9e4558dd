"""The engine's targets (issue #21), measured in one run on the medium models
(random weights at realistic shapes: ViT 12x768 and Q-Former 12x768 with a
LLaMA 8x1024 or a Flan-T5-shaped 8+8x1024 language model), the server
against our eager PyTorch loop in the same weight format
(model/python/iblip_model/eager_bench.py), written to BENCHMARKS.md:

1. time to first token, one stream, a fresh image per request (the eager
   loop's includes its own preprocessing of the same JPEG bytes);
2. the decode step of one stream (median time between tokens);
3. 32 requests (a fresh image each, 32-token outputs) at 16 concurrent
   against the eager loop's static batches of 8 (preprocessing included);
4. Poisson arrivals of fresh-image requests at 70% of the capacity measured
   in 3 (its requests/s): inter-token latency p50/p90/p99 per sequence
   (LLaMA only; the Flan-T5 path has targets 1-3).

Every JPEG is photo-like, 640x480 .. 800x600 (bench/photos.py), and each
server process sees each image once (a fresh server per family, format and
repeat; sections use disjoint images), so every request is a cache miss.
Each figure is the median over --repeats. --baseline FILE (the --json-out of
an earlier run, e.g. bench/baseline-before-v2.json) adds its server numbers
as "before" columns. bench/large_model.py writes the Vicuna-7B section,
which this script keeps. Run it on an otherwise idle machine: bench/run
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("IBLIP_BUILD_DIR", os.path.join(ROOT, "build"))
WORK = os.path.join(BUILD, "bench")
PYTHON = "/usr/bin/python3"
MODEL_PYTHON = os.path.join(ROOT, "model", "python")
sys.path[:0] = [MODEL_PYTHON, os.path.join(ROOT, "tests", "python")]

from photos import fresh_jpegs  # noqa: E402
from report import write_report  # noqa: E402
from server_harness import scrape_metrics, start_server, stop_server  # noqa: E402

THREADS = 2
PRESETS = {"llama": "medium", "t5": "medium-t5"}
SINGLE_PROMPT = "Describe this image in detail."
PROMPTS = [SINGLE_PROMPT, "What is in the picture?", "What colors do you see?",
           "Write a short caption for this photo.", "What shapes are in this image?"]
# Server histograms whose sums say where the engine's time went.
STAGES = {"queue": "iblip_request_queue_duration_seconds",
          "vision": "iblip_vision_stage_duration_seconds",
          "prefill": "iblip_prefill_duration_seconds",
          "ttft": "iblip_time_to_first_token_seconds",
          "decode_batch": "iblip_decode_batch_size"}


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=MODEL_PYTHON)
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env,
                          **kwargs).stdout


# --- inputs ------------------------------------------------------------------

def export_code_digest():
    """A digest of the code that makes packages (model/export and the Python
    package), so that a package made by older code is made again."""
    digest = hashlib.sha256()
    sources = [os.path.join(ROOT, "model", "export")]
    for directory, _, names in sorted(os.walk(os.path.join(ROOT, "model", "python"))):
        sources += [os.path.join(directory, n) for n in sorted(names) if n.endswith(".py")]
    for path in sources:
        digest.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


EXPORT_STAMP = ".bench-export-code"  # in a package: export_code_digest() of its maker


def bench_model(preset, dtype="fp32"):
    """The preset's random checkpoint and its package in `dtype`, made on
    first use; the package is made again when the export code changed."""
    checkpoint = os.path.join(WORK, f"{preset}-ckpt")
    package = os.path.join(WORK, f"{preset}-pkg" if dtype == "fp32" else f"{preset}-{dtype}-pkg")
    if not os.path.exists(os.path.join(checkpoint, "config.json")):
        log(f"generating the {preset} checkpoint")
        run([PYTHON, "-m", "iblip_model.random_checkpoint", "--preset", preset,
             "--output", checkpoint])
    stamp, code = os.path.join(package, EXPORT_STAMP), export_code_digest()
    made_by = open(stamp).read().strip() if os.path.exists(stamp) else None
    if not os.path.exists(os.path.join(package, "manifest.json")) or made_by != code:
        log(f"exporting the {preset} package ({dtype})"
            + (" again: the export code changed" if made_by is not None else ""))
        run([PYTHON, os.path.join(ROOT, "model", "export"), "--checkpoint", checkpoint,
             "--output", package, "--model-id", f"bench/{preset}", "--dtype", dtype])
        with open(stamp, "w") as f:
            f.write(code + "\n")
    return checkpoint, package


def write_workload(name, images, prompts, tokens):
    """iblip-bench's JSON lines: one request per image, exact output lengths."""
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        for i, image in enumerate(images):
            f.write(json.dumps({"image": image, "prompt": prompts[i % len(prompts)],
                                "parameters": {"max_new_tokens": tokens,
                                               "min_new_tokens": tokens}}) + "\n")
    return path


class Workloads:
    """The requests of one run, each on an image of its own."""

    def __init__(self, args):
        photos = lambda tag, n: fresh_jpegs(WORK, n, tag)  # noqa: E731
        self.warm = write_workload("warm.jsonl", photos("warm", 1), [SINGLE_PROMPT], 4)
        self.single = write_workload("single.jsonl", photos("single", args.single_requests),
                                     [SINGLE_PROMPT], args.single_tokens)
        self.batch = write_workload("batch.jsonl", photos("batch", args.requests), PROMPTS,
                                    args.tokens)
        self.poisson = write_workload("poisson.jsonl", photos("poisson", args.poisson_requests),
                                      PROMPTS, args.tokens)


# --- runners -----------------------------------------------------------------

def eager(checkpoint, dtype, workloads, batch_size):
    out = run([PYTHON, "-m", "iblip_model.eager_bench", "--checkpoint", checkpoint,
               "--threads", str(THREADS), "--dtype", dtype, "--single", workloads.single,
               "--batch", workloads.batch, "--batch-size", str(batch_size), "--json"])
    return json.loads(out.strip().splitlines()[-1])


def load(server, workload, *mode):
    """iblip-bench's JSON report of one run against `server`."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        run([os.path.join(BUILD, "client", "iblip-bench"), "--server", server.address,
             "--workload", workload, "--no-progress", "--duration", "3600",
             "--json-out", out.name, *mode])
        report = json.load(open(out.name))
    if report["succeeded"] != report["requests"]:
        raise RuntimeError(f"errors: {report['errors']}")
    return report


def histogram_totals(server):
    """{stage: (sum, count)} of the STAGES histograms; absent ones are left
    out (an engine may not export them all)."""
    metrics = scrape_metrics(server)
    totals = {}
    for stage, name in STAGES.items():
        sums = [v for (n, _), v in metrics.items() if n == name + "_sum"]
        counts = [v for (n, _), v in metrics.items() if n == name + "_count"]
        if sums and counts:
            totals[stage] = (sum(sums), sum(counts))
    return totals


def measured(server, action):
    """action()'s result and what the server's histograms gained meanwhile."""
    before = histogram_totals(server)
    result = action()
    after = histogram_totals(server)
    return result, {stage: (after[stage][0] - before.get(stage, (0, 0))[0],
                            after[stage][1] - before.get(stage, (0, 0))[1]) for stage in after}


def server_runs(package, workloads, args, poisson=True):
    """Sections 1-3 (and 4 if `poisson`) through one fresh server."""
    server = start_server("--threads", str(THREADS), "--scheduler.max-running-sequences", "32",
                          *args.server_arg, package_dir=package, start_timeout=600)
    try:
        load(server, workloads.warm, "--concurrency", "1")
        single, single_stages = measured(
            server, lambda: load(server, workloads.single, "--concurrency", "1"))
        batch, batch_stages = measured(
            server, lambda: load(server, workloads.batch, "--concurrency", str(args.concurrency)))
        capacity = batch["requests_per_s"]
        rate = args.load * capacity
        if poisson:
            arrivals, poisson_stages = measured(
                server, lambda: load(server, workloads.poisson, "--rate", f"{rate:.4f}",
                                     "--seed", "1"))
    finally:
        stop_server(server)
    result = {
        "ttft_ms": single["time_to_first_token"]["p50_ms"],
        "decode_step_ms": single["inter_token_latency"]["p50_ms"],
        "single_stages": single_stages,
        "throughput_tok_s": batch["output_tokens_per_s"],
        "capacity_req_s": capacity,
        "batch_wall_s": batch["wall_s"],
        "batch_stages": batch_stages,
    }
    if poisson:
        result["poisson"] = {"rate_req_s": rate, "achieved_req_s": arrivals["requests_per_s"],
                             "itl": arrivals["inter_token_latency"],
                             "ttft": arrivals["time_to_first_token"],
                             "coalesced_tokens": arrivals.get("coalesced_tokens", 0),
                             "wall_s": arrivals["wall_s"]}
        result["poisson_stages"] = poisson_stages
    return result


def read_bandwidth():
    """GB/s of a read-only pass (a sum) over a 1 GiB array, best of 5, on
    THREADS threads: a decode step only reads its weights, so this, not the
    copy's read + write figure, is the floor's bandwidth."""
    import torch
    torch.set_num_threads(THREADS)
    a = torch.ones(256 << 20)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        a.sum()
        best = max(best, a.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best


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
    """Bytes of the LM weights one decode step reads: LLaMA's layers, final
    norm and lm_head; T5's decoder and lm_head, less the cross-attention
    keys/values (computed once from the encoder output). Not the embedding
    tables, of which a step reads one row."""
    from iblip_model.checkpoint import load_state_dict
    size = {"fp32": 4, "bf16": 2}[dtype]

    def read_per_step(name):
        if not name.startswith("language_model.") or "embed_tokens" in name or "shared" in name:
            return False
        if ".encoder." in name or "EncDecAttention.k." in name or "EncDecAttention.v." in name:
            return False
        return True
    return sum(t.numel() * size for name, t in load_state_dict(checkpoint).items()
               if read_per_step(name))


# --- the run -------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="bf16,fp32", help="weight formats, comma-separated")
    parser.add_argument("--families", default="llama,t5", help="llama and/or t5")
    parser.add_argument("--requests", type=int, default=32, help="section 3's requests")
    parser.add_argument("--tokens", type=int, default=32, help="sections 3-4's output tokens")
    parser.add_argument("--concurrency", type=int, default=16, help="section 3's streams")
    parser.add_argument("--batch-size", type=int, default=8, help="the eager static batches")
    parser.add_argument("--single-requests", type=int, default=5)
    parser.add_argument("--single-tokens", type=int, default=64)
    parser.add_argument("--poisson-requests", type=int, default=64)
    parser.add_argument("--load", type=float, default=0.7, help="Poisson rate / capacity")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="a flag for iblip-server (repeat it for more; "
                             "e.g. --server-arg=--scheduler.prefill-token-budget --server-arg=512)")
    parser.add_argument("--omp-wait-policy", choices=["passive", "active"],
                        help="OMP_WAIT_POLICY of the server and the eager loop alike (default: "
                             "libgomp's own); on a machine other work keeps busy, passive "
                             "stops the eager loop's threads spinning against it")
    parser.add_argument("--baseline", help="an earlier run's --json-out: its numbers as 'before'")
    parser.add_argument("--json-out", default=os.path.join(WORK, "results.json"))
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    if args.omp_wait_policy:  # inherited by the server and the eager loop
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    dtypes, families = args.dtypes.split(","), args.families.split(",")
    started, load_before = time.monotonic(), os.getloadavg()[0]
    workloads = Workloads(args)
    models = {(f, d): bench_model(PRESETS[f], d) for f in families for d in dtypes}
    results = {f: {d: {"eager": [], "server": [],
                       "decode_weight_bytes": decode_weight_bytes(models[f, d][0], d)}
                   for d in dtypes} for f in families}
    document = {"command": "bench/run " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
                "settings": {k: v for k, v in vars(args).items()
                             if k not in ("baseline", "json_out", "output")},
                "copy_bandwidth_gb_s": [], "read_bandwidth_gb_s": [], "results": results}

    def save():  # after every piece, so that a failure later loses nothing
        document["minutes"] = (time.monotonic() - started) / 60
        document["load_average"] = [load_before, os.getloadavg()[0]]
        with open(args.json_out, "w") as f:
            json.dump(document, f, indent=1)

    for repeat in range(args.repeats):
        for family in families:
            for dtype in dtypes:
                checkpoint, package = models[family, dtype]
                log(f"repeat {repeat + 1}/{args.repeats}, {family} {dtype}: eager loop")
                results[family][dtype]["eager"].append(
                    eager(checkpoint, dtype, workloads, args.batch_size))
                save()
                log(f"repeat {repeat + 1}/{args.repeats}, {family} {dtype}: server")
                results[family][dtype]["server"].append(
                    server_runs(package, workloads, args, poisson=family == "llama"))
                save()
        document["copy_bandwidth_gb_s"].append(copy_bandwidth())
        document["read_bandwidth_gb_s"].append(read_bandwidth())
        save()
    baseline = json.load(open(args.baseline)) if args.baseline else None
    write_report(document, baseline, args.output)
    log(f"wrote {args.output} and {args.json_out}")


def git_commit():
    try:
        return run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    except (subprocess.CalledProcessError, OSError):
        return "unknown"


if __name__ == "__main__":
    main()
