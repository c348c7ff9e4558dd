"""bench/: the report's verdicts and before/after columns, that a run keeps
the large-model section, the 7B check's reading of the KV gauges, and the
fresh JPEGs. (The measurements themselves are benchmark programs, not
tests.)"""

import copy
import io
import os
import sys
import types

from PIL import Image

from server_harness import REPO_DIR

sys.path.insert(0, os.path.join(REPO_DIR, "bench"))
import large_model  # noqa: E402
import photos  # noqa: E402
import report  # noqa: E402


def server_run(ttft, step, tok_s, p50=40.0, p99=100.0, poisson=True):
    stages = {"queue": (0.02, 1), "vision": (0.3, 1), "prefill": (0.05, 1)}
    run = {"ttft_ms": ttft, "decode_step_ms": step, "single_stages": stages,
           "throughput_tok_s": tok_s, "capacity_req_s": tok_s / 32, "batch_wall_s": 10.0,
           "batch_stages": {"vision": (4.0, 8), "prefill": (1.0, 32),
                            "decode_batch": (300.0, 40)}}
    if poisson:
        run["poisson"] = {"rate_req_s": 0.7 * tok_s / 32, "achieved_req_s": 1.0,
                          "itl": {"p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p99,
                                  "max_ms": p99 * 2},
                          "ttft": {"p50_ms": 300.0, "p99_ms": 900.0}, "coalesced_tokens": 0,
                          "wall_s": 60.0}
        run["poisson_stages"] = {"vision": (3.0, 10), "prefill": (1.0, 40)}
    return run


def eager_run(ttft, step, tok_s):
    return {"ttft_ms": [ttft, ttft + 10, ttft - 10], "preprocess_ms": [15.0, 16.0, 14.0],
            "decode_step_ms": step, "static_tok_s": tok_s}


def document():
    def cell(server_ttft, poisson):
        return {"eager": [eager_run(200.0, 22.0, 90.0), eager_run(210.0, 23.0, 88.0)],
                "server": [server_run(server_ttft, 16.0, 200.0, poisson=poisson),
                           server_run(server_ttft + 20, 17.0, 190.0, poisson=poisson)],
                "decode_weight_bytes": 271_000_000}
    return {"command": "bench/run --repeats 2", "minutes": 30.0, "date": "2026-12-01",
            "commit": "abc1234",
            "settings": {"repeats": 2, "requests": 32, "tokens": 32, "concurrency": 16,
                         "batch_size": 8, "poisson_requests": 64, "load": 0.7},
            "copy_bandwidth_gb_s": [35.0, 34.0],
            "results": {"llama": {"bf16": cell(100.0, True), "fp32": cell(400.0, True)},
                        "t5": {"bf16": cell(120.0, False)}}}


def test_verdicts_follow_the_targets():
    text = report.render(document(), None)
    summary = text[text.index("## Summary"):text.index("## 1.")]
    # TTFT: bf16 110/205 = 0.54x (met), fp32 410/205 = 2.0x (missed).
    ttft_row = next(line for line in summary.splitlines() if line.startswith("| Time to first"))
    assert "**met** (0.54x)" in ttft_row and "missed (2.00x)" in ttft_row
    # Decode 16.5/22.5 = 0.73x <= 0.8x; throughput 195/89 = 2.19x >= 2x; ITL 100/40 = 2.5x.
    assert "**met** (0.73x)" in summary and "**met** (2.19x)" in summary
    assert "**met** (2.50x)" in summary
    assert "## 4. Inter-token latency" in text and "## 5. The Flan-T5 path" in text
    t5 = text[text.index("## 5. The Flan-T5 path"):]
    assert "### 5.1 Time to first token" in t5 and "Inter-token" not in t5
    assert "before" not in text.lower()
    assert "vision stage (vision encoder + Q-Former) 300 ms" in text  # what bounds TTFT


def test_baseline_adds_before_columns():
    before = copy.deepcopy(document())
    before["commit"] = "0ld0000"
    for run in before["results"]["llama"]["bf16"]["server"]:
        run["ttft_ms"] = 468.0
        run["poisson"]["itl"]["p99_ms"] = 1390.0
        run["poisson"]["itl"]["p50_ms"] = 36.0
    text = report.render(document(), before)
    assert "(commit 0ld0000)" in text
    ttft = text[text.index("## 1."):text.index("## 2.")]
    assert "before: server (/ eager)" in ttft and "468.0 (2.28x)" in ttft
    poisson = text[text.index("## 4."):text.index("## 5.")]
    assert "38.6x (1390/36)" in poisson


def test_a_run_keeps_the_large_model_section(tmp_path):
    path = str(tmp_path / "BENCHMARKS.md")
    kept = (f"{report.LARGE_MODEL_BEGIN}\n## Large model: Vicuna-7B\n\n| a | b |\n"
            f"{report.LARGE_MODEL_END}")
    with open(path, "w") as f:
        f.write("# Benchmarks\n\nold numbers\n\n" + kept + "\n")
    for _ in range(2):  # twice: still exactly one copy
        report.write_report(document(), None, path)
    text = open(path).read()
    assert "old numbers" not in text and "## 1. Time to first token" in text
    assert text.count(report.LARGE_MODEL_BEGIN) == 1 and kept in text


def test_kv_gauges_of_slots_and_of_blocks():
    slots = {"iblip_kv_cache_slots_used": 3, "iblip_kv_cache_slots": 4}
    assert large_model.allocated_tokens(slots, 2048) == (3 * 2048, 4 * 2048)
    blocks = {"iblip_kv_cache_blocks_used": 100, "iblip_kv_cache_blocks": 512,
              "iblip_kv_cache_block_tokens": 16, **slots}  # blocks win when both are there
    assert large_model.allocated_tokens(blocks, 2048) == (1600, 8192)
    assert large_model.allocated_tokens({}, 2048) == (None, None)


def test_kv_capacity_reads_the_paged_block_pool(tmp_path):
    """The 7B check's measurement against the real server, scaled down: the
    tiny package's 1 KiB a token in a 1 MiB budget is 64 blocks of 16
    positions (1024 tokens) for four streams of 400: more than one holds
    blocks at once, and the peak's live tokens fit the budget."""
    import argparse
    import json
    from iblip_client import Client
    from server_harness import PACKAGE_DIR, png_bytes, start_server, stop_server
    manifest = json.load(open(os.path.join(PACKAGE_DIR, "manifest.json")))
    per_token = large_model.kv_bytes_per_token(manifest)
    assert per_token == 1024
    images = []
    for i in range(4):
        images.append(str(tmp_path / f"{i}.png"))
        open(images[-1], "wb").write(png_bytes(color=(40 * i, 90, 200)))
    args = argparse.Namespace(kv_cache_mib=1, sequence_tokens=400, poll_s=0.01, run_to_end=True)
    server = start_server("--scheduler.kv-cache-mib", "1", "--scheduler.max-running-sequences", "8")
    try:
        with Client(server.address) as client:
            info = client.info()
        result = large_model.kv_capacity(server, args, info, per_token, images)
    finally:
        assert stop_server(server) == 0
    assert result["budget_tokens"] == 1024 and result["streams"] == 4
    assert result["peak_held"] >= 2
    assert 400 < result["live_tokens_at_peak"] <= 1024
    assert result["live_share"] == result["live_tokens_at_peak"] / 1024
    assert 0 < result["allocated_share"] <= 1.0
    assert all(s["server_running"] <= 4 for s in result["samples"])


def large_result(held, live_tokens, decode):
    return {"command": "bench/large_model.py", "preset": "vicuna-7b", "dtype": "bf16",
            "kv_cache_mib": 4096, "kv_bytes_per_token": 524288, "package_gib": 14.7,
            "load_s": 27.0, "rss_loaded_gib": 19.1, "rss_gib": 19.1, "rss_peak_gib": 19.2,
            "single_decode_tok_s": decode, "single_step_p50_ms": 690.0, "single_ttft_ms": 4800.0,
            "baseline_decode_tok_s": 1.45,
            "capacity": {"streams": 36, "sequence_tokens": 256, "new_tokens": 216,
                         "budget_tokens": 8192, "held_at_peak": held, "peak_held": held,
                         "live_tokens_at_peak": live_tokens, "live_share": live_tokens / 8192,
                         "allocated_share": 1.0, "seconds": 300.0}}


def test_large_model_section_judges_capacity_and_decode():
    today = "\n".join(large_model.section(large_result(4, 4 * 256, 1.45)))
    assert "| 4 (most at any sample: 4) | >= 28 | missed |" in today
    assert "| 12.5% (1024 tokens) | >= 87% | missed |" in today
    assert "**met** (1.00x)" in today
    paged = "\n".join(large_model.section(large_result(30, 30 * 255, 1.36)))
    assert ">= 28 | **met** |" in paged and "| >= 87% | **met** |" in paged
    assert "missed (0.94x)" in paged
    assert paged.startswith("### The Vicuna-7B shapes")


def test_each_preset_replaces_only_its_own_block_and_the_report_keeps_them(tmp_path):
    """A medium rehearsal must not drop the Vicuna-7B numbers (it once did),
    and bench/run's report keeps both and the analysis written by hand."""
    path = str(tmp_path / "BENCHMARKS.md")
    with open(path, "w") as f:
        f.write("# Benchmarks\n\n" + report.ANALYSIS_BEGIN + "\nby hand\n" + report.ANALYSIS_END + "\n")
    args = types.SimpleNamespace(output=path)
    large_model.write_section(args, large_result(4, 4 * 256, 1.45))
    medium = dict(large_result(30, 30 * 255, 40.0), preset="medium")
    large_model.write_section(args, medium)
    large_model.write_section(args, dict(medium, single_decode_tok_s=41.0))
    text = open(path).read()
    assert text.count("### The Vicuna-7B shapes") == 1 and "1.45 tok/s" in text
    assert text.count("(`medium` preset)") == 1 and "41.00 tok/s" in text and "40.00" not in text
    kept = report.kept_large_model_section(path)
    assert kept.startswith(report.ANALYSIS_BEGIN) and "by hand" in kept
    assert kept.endswith(report.LARGE_MODEL_END) and "### The Vicuna-7B shapes" in kept


def test_fresh_photos_are_jpegs_of_the_promised_sizes(tmp_path):
    first = photos.fresh_jpegs(str(tmp_path), 3, "a")
    again = photos.fresh_jpegs(str(tmp_path), 3, "a")
    other = photos.fresh_jpegs(str(tmp_path), 3, "b")
    assert first == again
    contents = [open(p, "rb").read() for p in first + other]
    assert len(set(contents)) == 6  # every image is new to a server
    for data in contents:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.mode == "RGB"
        width, height = image.size
        assert 640 <= width <= 800 and height == width * 3 // 4
        assert 20_000 < len(data) < 400_000  # compresses like a photo, not like noise
    assert photos.draw(7).tobytes() == photos.draw(7).tobytes()


def test_the_decode_floor_uses_the_read_bandwidth_when_it_was_measured():
    # 271 MB: at the copy's 34.5 GB/s (read + written) 7.9 ms; at 27.1 GB/s
    # of reads 10.0 ms.
    old = report.render(document(), None)
    assert "at the copy bandwidth (read + written) (34.5 GB/s) that takes 7.9 ms" in old
    measured = dict(document(), read_bandwidth_gb_s=[27.1])
    text = report.render(measured, None)
    assert "at the read bandwidth (27.1 GB/s) that takes 10.0 ms" in text
    assert "copy bandwidth" not in text


def test_a_run_saves_its_results_and_writes_the_report(tmp_path, monkeypatch):
    """bench/run's orchestration with the measurements stubbed out: every
    family x format x repeat lands in the JSON that report.py reads, and a
    baseline missing a family shows '-'."""
    import json
    import benchmarks
    monkeypatch.setattr(benchmarks, "bench_model", lambda preset, dtype: ("ckpt", "pkg"))
    monkeypatch.setattr(benchmarks, "decode_weight_bytes", lambda checkpoint, dtype: 1e8)
    monkeypatch.setattr(benchmarks, "Workloads", lambda args: None)
    monkeypatch.setattr(benchmarks, "copy_bandwidth", lambda: 30.0)
    monkeypatch.setattr(benchmarks, "read_bandwidth", lambda: 20.0)
    monkeypatch.setattr(benchmarks, "eager", lambda *a: eager_run(200.0, 22.0, 90.0))
    monkeypatch.setattr(benchmarks, "server_runs", lambda package, workloads, args, poisson:
                        server_run(100.0, 16.0, 200.0, poisson=poisson))
    before = document()
    del before["results"]["t5"]
    (tmp_path / "before.json").write_text(json.dumps(before))
    monkeypatch.setattr(sys, "argv", [
        "benchmarks.py", "--repeats", "2", "--dtypes", "bf16", "--json-out",
        str(tmp_path / "r.json"), "--output", str(tmp_path / "B.md"), "--baseline",
        str(tmp_path / "before.json")])
    benchmarks.main()
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["copy_bandwidth_gb_s"] == [30.0, 30.0]
    assert saved["read_bandwidth_gb_s"] == [20.0, 20.0]
    assert set(saved["results"]) == {"llama", "t5"}
    assert len(saved["results"]["t5"]["bf16"]["server"]) == 2
    assert "poisson" not in saved["results"]["t5"]["bf16"]["server"][0]
    text = (tmp_path / "B.md").read_text()
    t5 = text[text.index("### 5.1"):text.index("### 5.2")]
    assert "| bf16 | 200.0 | 100.0 | 0.50x | - | <= 0.7x | **met** (0.50x) |" in t5


def test_a_package_made_by_older_export_code_is_made_again(tmp_path, monkeypatch):
    """bench/run reuses its packages, but not one that code since changed
    would export differently (a stale bf16 package once hid a new kernel)."""
    import benchmarks
    monkeypatch.setattr(benchmarks, "WORK", str(tmp_path))
    (tmp_path / "medium-ckpt").mkdir()
    (tmp_path / "medium-ckpt" / "config.json").write_text("{}")
    exports = []

    def fake_run(args, **kwargs):
        package = args[args.index("--output") + 1]
        os.makedirs(package, exist_ok=True)
        with open(os.path.join(package, "manifest.json"), "w") as f:
            f.write("{}")
        exports.append(package)
    monkeypatch.setattr(benchmarks, "run", fake_run)
    assert len(benchmarks.export_code_digest()) == 64
    monkeypatch.setattr(benchmarks, "export_code_digest", lambda: "code-1")
    benchmarks.bench_model("medium", "bf16")
    benchmarks.bench_model("medium", "bf16")
    assert len(exports) == 1
    monkeypatch.setattr(benchmarks, "export_code_digest", lambda: "code-2")
    benchmarks.bench_model("medium", "bf16")
    assert len(exports) == 2
    assert (tmp_path / "medium-bf16-pkg" / benchmarks.EXPORT_STAMP).read_text().strip() == "code-2"
