"""BENCHMARKS.md from bench/benchmarks.py's results (and an earlier run's as
"before"): one table per target of issue #21, eager loop against server,
target, met or missed, and what bounds each remaining gap. Keeps the
analysis written by hand (between the analysis markers) and the section
bench/large_model.py wrote (between the large-model markers).

    /usr/bin/python3 bench/report.py RESULTS.json [--baseline BEFORE.json] [--output FILE]
re-renders a report without measuring again.
"""

import argparse
import os
import platform
import statistics

LARGE_MODEL_BEGIN, LARGE_MODEL_END = "<!-- large-model -->", "<!-- /large-model -->"
ANALYSIS_BEGIN, ANALYSIS_END = "<!-- analysis -->", "<!-- /analysis -->"
MODELS = {"llama": "LLaMA 8x1024 (medium: ViT 12x768, Q-Former 12x768, 32001-row vocabulary)",
          "t5": "Flan-T5-shaped 8+8x1024, gated-GELU, 16 heads (medium-t5: same ViT and "
                "Q-Former, 32128-row vocabulary)"}
FAMILY_NAMES = {"llama": "LLaMA", "t5": "Flan-T5"}


# --- numbers ------------------------------------------------------------------

def median(values):
    return statistics.median(values)


def fmt(values, digits=1):
    """'median (low-high)' over repeats, or the one value."""
    mid = median(values)
    if min(values) == max(values):
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def eager_values(cell, key):
    """Per repeat: the eager loop's figure (a list's median, e.g. TTFT over
    requests, or the number)."""
    values = [e[key] for e in cell["eager"]]
    return [median(v) if isinstance(v, list) else v for v in values]


def server_values(cell, *path):
    out = []
    for s in cell["server"]:
        for key in path:
            s = s[key]
        out.append(s)
    return out


def stage_mean(cell, section, stage):
    """Median over repeats of a server histogram's mean observation during
    `section`; None if the server has no such metric."""
    values = [s[section][stage][0] / s[section][stage][1] for s in cell["server"]
              if stage in s.get(section, {}) and s[section][stage][1] > 0]
    return median(values) if values else None


def stage_mean_ms(cell, section, stage):
    mean = stage_mean(cell, section, stage)
    return None if mean is None else mean * 1000


def stage_seconds(cell, section, stage):
    values = [(s[section][stage][0], s[section][stage][1]) for s in cell["server"]
              if stage in s.get(section, {})]
    if not values:
        return None, None
    return median(v[0] for v in values), median(v[1] for v in values)


# --- targets ------------------------------------------------------------------

class Target:
    """One of the issue's targets: how to read the eager and server figures
    from a results cell, the ratio and its bound."""

    def __init__(self, title, unit, eager, server, bound, lower_is_better, text):
        self.title, self.unit, self.eager, self.server = title, unit, eager, server
        self.bound, self.lower_is_better, self.text = bound, lower_is_better, text

    def ratio(self, cell):
        return median(self.server(cell)) / median(self.eager(cell))

    def met(self, cell):
        r = self.ratio(cell)
        return r <= self.bound if self.lower_is_better else r >= self.bound

    def goal(self):
        return f"{'<=' if self.lower_is_better else '>='} {self.bound}x"


TARGETS = [
    Target("Time to first token, one stream, fresh image", "ms",
           lambda c: eager_values(c, "ttft_ms"), lambda c: server_values(c, "ttft_ms"), 0.7, True,
           "server p50 over the requests (client side, gRPC included) / the eager loop's median "
           "from the JPEG bytes (preprocessing, vision, Q-Former, prefill, first token)"),
    Target("Decode step, one stream", "ms",
           lambda c: eager_values(c, "decode_step_ms"),
           lambda c: server_values(c, "decode_step_ms"), 0.8, True,
           "median time between tokens of one stream: server (inter-token latency p50 at the "
           "client) / eager loop"),
    Target("Throughput on fresh images: concurrent requests vs static batches", "tok/s",
           lambda c: eager_values(c, "static_tok_s"),
           lambda c: server_values(c, "throughput_tok_s"), 2.0, False,
           "output tokens per second: server, closed loop / eager loop in static batches, "
           "preprocessing included"),
]


def poisson_ratio(cell):
    return median(server_values(cell, "poisson", "itl", "p99_ms")) / median(
        server_values(cell, "poisson", "itl", "p50_ms"))


# --- sections -------------------------------------------------------------------

def baseline_cell(baseline, family, dtype):
    try:
        cell = baseline["results"][family][dtype] if baseline else None
    except KeyError:
        return None
    # A format the earlier run listed but never got to measure counts as absent.
    return cell if cell and cell.get("server") and cell.get("eager") else None


def verdict(ok, ratio):
    return f"**met** ({ratio:.2f}x)" if ok else f"missed ({ratio:.2f}x)"


def target_table(target, results, baseline, family, settings):
    cells = results[family]
    lines = [f"| format | eager loop, {target.unit} | server, {target.unit} | server / eager |"
             + (" before: server (/ eager) |" if baseline else "") + " target | |",
             "|---|---|---|---|" + ("---|" if baseline else "") + "---|---|"]
    for dtype, cell in cells.items():
        row = (f"| {dtype} | {fmt(target.eager(cell))} | {fmt(target.server(cell))} | "
               f"{target.ratio(cell):.2f}x |")
        before = baseline_cell(baseline, family, dtype)
        if baseline:
            row += (f" {median(target.server(before)):.1f} ({target.ratio(before):.2f}x) |"
                    if before else " - |")
        lines.append(row + f" {target.goal()} | {verdict(target.met(cell), target.ratio(cell))} |")
    return lines


def ttft_bounds(cell, dtype):
    parts = []
    for stage, name in (("queue", "queue (decode, resize, tokenize, wait)"),
                        ("vision", "vision stage (vision encoder + Q-Former)"),
                        ("prefill", "prefill")):
        value = stage_mean_ms(cell, "single_stages", stage)
        if value is not None:
            parts.append(f"{name} {value:.0f} ms")
    pre = median(eager_values(cell, "preprocess_ms"))
    rest = median(eager_values(cell, "ttft_ms")) - pre
    return (f"- {dtype}: server per request: " + (", ".join(parts) or "no stage metrics")
            + f"; eager: preprocessing {pre:.0f} ms, vision + Q-Former + prefill {rest:.0f} ms.")


def decode_bounds(cell, dtype, bandwidth):
    """bandwidth: (GB/s, what was measured)."""
    weights = cell["decode_weight_bytes"]
    gb_s, measured = bandwidth
    floor = weights / (gb_s * 1e9) * 1000
    server = median(server_values(cell, "decode_step_ms"))
    return (f"- {dtype}: a step reads {weights / 1e6:.0f} MB of weights; at the {measured} "
            f"({gb_s:.1f} GB/s) that takes {floor:.1f} ms, the floor of a batch-1 step; the "
            f"server's step is {server:.1f} ms ({100 * floor / server:.0f}% of that speed).")


def floor_bandwidth(document):
    """The read bandwidth; documents from before it was measured have only
    the copy's, which counts the bytes written too and so overstates the
    speed at which a decode step can read its weights."""
    if document.get("read_bandwidth_gb_s"):
        return median(document["read_bandwidth_gb_s"]), "read bandwidth"
    return median(document["copy_bandwidth_gb_s"]), "copy bandwidth (read + written)"


def throughput_bounds(cell, dtype):
    wall = median(server_values(cell, "batch_wall_s"))
    parts = []
    busy = 0.0
    for stage, name in (("vision", "vision stage"), ("prefill", "prefills")):
        total, count = stage_seconds(cell, "batch_stages", stage)
        if total is not None:
            busy += total
            parts.append(f"{name} {total:.1f} s ({100 * total / wall:.0f}%, {count:.0f} runs)")
    batch = stage_mean(cell, "batch_stages", "decode_batch")
    decode = f"; mean decode batch {batch:.1f} sequences" if batch is not None else ""
    return (f"- {dtype}: of the server's {wall:.1f} s: " + ", ".join(parts)
            + f", decode steps and the rest {wall - busy:.1f} s{decode}.")


def poisson_table(results, baseline, family):
    lines = ["| format | capacity, req/s | offered, req/s | ITL p50 ms | p90 | p99 | max | "
             "TTFT p50 ms | TTFT p99 | p99 / p50 |" + (" before: p99 / p50 (ms) |" if baseline else "")
             + " target | |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if baseline else "") + "---|---|"]
    for dtype, cell in results[family].items():
        p = lambda *k: fmt(server_values(cell, "poisson", *k), 0)  # noqa: E731
        ratio = poisson_ratio(cell)
        row = (f"| {dtype} | {fmt(server_values(cell, 'capacity_req_s'), 2)} | "
               f"{fmt(server_values(cell, 'poisson', 'rate_req_s'), 2)} | {p('itl', 'p50_ms')} | "
               f"{p('itl', 'p90_ms')} | {p('itl', 'p99_ms')} | {p('itl', 'max_ms')} | "
               f"{p('ttft', 'p50_ms')} | {p('ttft', 'p99_ms')} | {ratio:.1f}x |")
        before = baseline_cell(baseline, family, dtype)
        if baseline:
            row += (f" {poisson_ratio(before):.1f}x "
                    f"({median(server_values(before, 'poisson', 'itl', 'p99_ms')):.0f}/"
                    f"{median(server_values(before, 'poisson', 'itl', 'p50_ms')):.0f}) |"
                    if before else " - |")
        lines.append(row + f" <= 3x | {'**met**' if ratio <= 3 else 'missed'} |")
    return lines


def poisson_bounds(cell, dtype):
    vision = stage_mean_ms(cell, "poisson_stages", "vision")
    prefill = stage_mean_ms(cell, "poisson_stages", "prefill")
    if vision is None and prefill is None:
        return f"- {dtype}: no stage metrics."
    parts = [f"a vision batch {vision:.0f} ms" if vision is not None else None,
             f"a prefill {prefill:.0f} ms" if prefill is not None else None]
    return (f"- {dtype}: a stream's gap grows by whatever the engine runs between two of its "
            "decode steps; mean durations during the run: " + ", ".join(p for p in parts if p)
            + ".")


def family_sections(document, baseline, family, number):
    results, settings = document["results"], document["settings"]
    bandwidth = floor_bandwidth(document)
    cells = results[family]
    sections = []
    for i, target in enumerate(TARGETS):
        heading = (f"### {number}.{i + 1} {target.title}" if family != "llama" else
                   f"## {i + 1}. {target.title}")
        if i == 2:
            heading += (f" ({settings['requests']} requests, {settings['tokens']}-token outputs, "
                        f"{settings['concurrency']} concurrent; batches of {settings['batch_size']})")
        sections += [heading, "", f"{target.text[0].upper()}{target.text[1:]}.", ""]
        sections += target_table(target, results, baseline, family, settings) + [""]
        sections.append("What bounds it:")
        for dtype, cell in cells.items():
            sections.append([ttft_bounds(cell, dtype), decode_bounds(cell, dtype, bandwidth),
                             throughput_bounds(cell, dtype)][i])
        sections.append("")
    if family == "llama":
        sections += [
            "## 4. Inter-token latency under Poisson arrivals",
            "",
            f"{settings['poisson_requests']} fresh-image requests ({settings['tokens']}-token "
            f"outputs) arriving as a Poisson process at {settings['load']:.0%} of the capacity "
            "(section 3's closed-loop requests/s); inter-token latencies are taken within each "
            "sequence, between arrivals of its tokens at the client.", ""]
        sections += poisson_table(results, baseline, family) + ["", "What bounds it:"]
        sections += [poisson_bounds(cell, dtype) for dtype, cell in cells.items()] + [""]
    return sections


def summary(document):
    results = document["results"]
    columns = [(f, d) for f in results for d in results[f]]
    lines = ["| target | " + " | ".join(f"{FAMILY_NAMES[f]} {d}" for f, d in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for target in TARGETS:
        lines.append(f"| {target.title}: server / eager {target.goal()} | " + " | ".join(
            verdict(target.met(results[f][d]), target.ratio(results[f][d])) for f, d in columns)
            + " |")
    if "llama" in results:
        lines.append("| Poisson at 70% of capacity: ITL p99 / p50 <= 3x | " + " | ".join(
            (verdict(poisson_ratio(results[f][d]) <= 3, poisson_ratio(results[f][d]))
             if f == "llama" else "-") for f, d in columns) + " |")
    return lines


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo")
                  if line.startswith("MemTotal")) / 2**20
    import torch
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; {platform.platform()}; "
            f"torch {torch.__version__} (libtorch C++ in the server); 2 intra-op threads")


def load_note(document):
    """The 1-minute load average when the run started and ended: above the
    core count, other work competed for the CPUs and the numbers are not
    the machine's."""
    if "load_average" not in document:
        return ""
    start, end = document["load_average"]
    note = f" Load average (1 min) at the start and end of the run: {start:.1f}, {end:.1f}"
    if max(start, end) > os.cpu_count():
        note += (f", above the {os.cpu_count()} cores: other work competed for them, so these "
                 "numbers are not the machine's")
    note += "."
    policy = document["settings"].get("omp_wait_policy")
    if policy:
        note += f" OMP_WAIT_POLICY={policy.upper()} for the server and the eager loop alike."
    return note


def kept_large_model_section(path):
    """The blocks of the existing report that this script does not make:
    the analysis written by hand and bench/large_model.py's section."""
    text = open(path).read() if os.path.exists(path) else ""
    kept = []
    for begin, end in ((ANALYSIS_BEGIN, ANALYSIS_END), (LARGE_MODEL_BEGIN, LARGE_MODEL_END)):
        if begin in text and end in text:
            kept.append(text[text.index(begin):text.index(end) + len(end)])
    return "\n\n".join(kept)


def render(document, baseline, kept=""):
    settings = document["settings"]
    repeats = settings["repeats"]
    lines = [
        "# Benchmarks", "",
        f"Made by `{document['command']}` in {document['minutes']:.0f} min on {document['date']} "
        f"(commit {document['commit']}). Medians of {repeats} run{'s' if repeats > 1 else ''}"
        + (", range in brackets" if repeats > 1 else "") + ". The server (gRPC, measured at the "
        "client by iblip-bench) against our eager PyTorch loop (Hugging Face-style generate, "
        "`python -m iblip_model.eager_bench`) in the same weight format, on the same JPEGs and "
        "prompts. Every request carries a photo-like JPEG of 640x480 .. 800x600 that the server "
        "has not seen (bench/photos.py).", ""]
    if baseline:
        lines += [f"\"Before\": `{baseline['command']}` on {baseline['date']} "
                  f"(commit {baseline['commit']}).", ""]
    lines += [f"Machine: {machine()}." + load_note(document), ""]
    for family in document["results"]:
        lines.append(f"- {FAMILY_NAMES[family]}: {MODELS[family]}")
    lines += ["", "## Summary", ""] + summary(document) + [""]
    if "llama" in document["results"]:
        lines += family_sections(document, baseline, "llama", 0)
    if "t5" in document["results"]:
        lines += ["## 5. The Flan-T5 path", "",
                  "The same first three targets on the Flan-T5-shaped model.", ""]
        lines += family_sections(document, baseline, "t5", 5)
    text = "\n".join(lines).rstrip("\n") + "\n"
    return text + ("\n" + kept + "\n" if kept else "")


def write_report(document, baseline, path):
    kept = kept_large_model_section(path)  # before the file is rewritten
    text = render(document, baseline, kept)
    with open(path, "w") as f:
        f.write(text)


def main():
    import json
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--baseline")
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md"))
    args = parser.parse_args()
    baseline = json.load(open(args.baseline)) if args.baseline else None
    write_report(json.load(open(args.results)), baseline, args.output)


if __name__ == "__main__":
    main()
