"""The chat command and the load generator against a running server."""

import json
import os
import subprocess

from server_harness import BUILD_DIR, metric, png_bytes, scrape_metrics

BENCH_BIN = os.path.join(BUILD_DIR, "client", "iblip-bench")


def test_chat_answers_each_stdin_line_and_runs_the_vision_encoder_once(server, tmp_path):
    # An image no other test sends, so the caches have not seen it.
    image = tmp_path / "chat.png"
    image.write_bytes(png_bytes(color=(17, 170, 71)))
    before = scrape_metrics(server)
    result = subprocess.run(
        [os.path.join(BUILD_DIR, "client", "iblip-client"), "chat", "--server", server.address,
         "--image", str(image), "--max-new-tokens", "4"],
        input="what color is it?\nhow many shapes?\nwhat color is it?\n", capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model> ") == 3
    stats = [line for line in result.stderr.splitlines() if "time to first token" in line]
    assert len(stats) == 3 and all("tok/s" in line for line in stats)
    after = scrape_metrics(server)

    def added(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)
    # Turn 1 misses both caches: the one vision-encoder run. Turn 2 (another
    # question) hits the vision cache and runs the Q-Former alone; turn 3 (a
    # repeated question) hits the Q-Former cache and skips the vision stage.
    assert added("iblip_cache_misses_total", cache="vision") == 1
    assert added("iblip_cache_hits_total", cache="vision") == 1
    assert added("iblip_cache_misses_total", cache="qformer") == 2
    assert added("iblip_cache_hits_total", cache="qformer") == 1
    assert added("iblip_vision_batch_size_sum") == 2
    assert added("iblip_requests_total", code="ok") == 3


def test_chat_reports_a_bad_turn_and_goes_on(server, image_path):
    result = subprocess.run(
        [os.path.join(BUILD_DIR, "client", "iblip-client"), "chat", "--server", server.address,
         "--image", image_path, "--max-new-tokens", "2", "--top-p", "1.5"],
        input="first?\nsecond?\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr.count("INVALID_ARGUMENT") == 2 and "top_p" in result.stderr


def test_bench_closed_and_open_loop_report_json(server, image_path, tmp_path):
    for mode in (["--concurrency", "3"], ["--rate", "30"]):
        out = tmp_path / "report.json"
        result = subprocess.run(
            [BENCH_BIN, "--server", server.address, "--image", image_path, "--requests", "12",
             "--duration", "20", "--min-tokens", "2", "--max-tokens", "6", "--json-out", str(out),
             *mode], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "time to first token" in result.stdout
        report = json.loads(out.read_text())
        assert report["requests"] == report["succeeded"] == 12
        assert report["errors"] == {}
        assert 12 * 2 <= report["output_tokens"] <= 12 * 6  # exact lengths in [2, 6]
        for latency in ("time_to_first_token", "inter_token_latency", "end_to_end_latency"):
            p = report[latency]
            assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
        assert report["output_tokens_per_s"] > 0


def test_bench_counts_errors_by_code(server, image_path, tmp_path):
    workload = tmp_path / "w.jsonl"
    workload.write_text(json.dumps({"image": image_path, "prompt": "hi",
                                    "parameters": {"max_new_tokens": 3}}) + "\n"
                        + json.dumps({"image": image_path, "prompt": "hi",
                                      "parameters": {"top_p": 2.0}}) + "\n")
    out = tmp_path / "report.json"
    result = subprocess.run([BENCH_BIN, "--server", server.address, "--workload", str(workload),
                             "--concurrency", "1", "--json-out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["succeeded"] == 1 and report["errors"] == {"INVALID_ARGUMENT": 1}


def test_bench_rejects_a_bad_command_line():
    for flags in (["--concurrency", "2", "--rate", "3"], ["--rate", "3", "--load-fraction", "0.7"]):
        result = subprocess.run([BENCH_BIN, *flags, "--image", "x"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "exclude each other" in result.stderr
    result = subprocess.run([BENCH_BIN, "--load-fraction", "0", "--image", "x"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--load-fraction must be > 0" in result.stderr


def test_bench_measures_capacity_then_offers_a_fraction_of_it(server, tmp_path):
    """--load-fraction: a closed-loop phase, then Poisson arrivals at that
    fraction of its requests/s, each phase on its own workload lines: with
    an image per line every image reaches the server once (a cache miss)."""
    from server_harness import png_bytes
    lines = []
    for i in range(10):
        image = tmp_path / f"{i}.png"
        image.write_bytes(png_bytes(color=(20 * i, 255 - 20 * i, 90)))
        lines.append(json.dumps({"image": image.name, "prompt": "What is it?",
                                 "parameters": {"max_new_tokens": 4, "min_new_tokens": 4}}))
    workload = tmp_path / "fresh.jsonl"
    workload.write_text("\n".join(lines) + "\n")
    misses = ("iblip_cache_misses_total", (("cache", "vision"),))
    before = scrape_metrics(server).get(misses, 0)
    out = tmp_path / "report.json"
    result = subprocess.run(
        [BENCH_BIN, "--server", server.address, "--workload", str(workload), "--concurrency", "2",
         "--capacity-requests", "4", "--load-fraction", "0.7", "--seed", "5",
         "--json-out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "capacity: closed loop, 2 streams" in result.stdout and "x capacity" in result.stdout
    report = json.loads(out.read_text())
    capacity = report["capacity"]
    assert capacity["succeeded"] == 4 and capacity["concurrency"] == 2
    assert report["mode"] == "open" and report["succeeded"] == report["requests"] == 6
    assert abs(report["rate_per_s"] - 0.7 * capacity["requests_per_s"]) < 1e-9
    # 4 tokens: 3 gaps, less one per token that came in the same message as another.
    assert report["inter_token_latency"]["count"] + report["coalesced_tokens"] == 6 * 3
    assert report["inter_token_latency"]["max_ms"] >= report["inter_token_latency"]["p99_ms"]
    assert scrape_metrics(server)[misses] - before == 10


def test_python_example_script_streams_an_answer(server, image_path):
    from server_harness import REPO_DIR
    result = subprocess.run(
        ["/usr/bin/python3", os.path.join(REPO_DIR, "client", "python", "example.py"),
         "--server", server.address, "--image", image_path, "--prompt", "Describe.",
         "--max-new-tokens", "5"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "[5 tokens, first after" in result.stderr or "tokens, first after" in result.stderr
