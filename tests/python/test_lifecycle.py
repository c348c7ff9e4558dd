"""Startup and shutdown: bad packages never report ready; SIGTERM drains; a
drain that times out ends HTTP streams with an error event and [DONE]; a
second signal exits at once."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import grpc

from http_util import chat_body, connect, events, read_response, request_bytes
from server_harness import (PACKAGE_DIR, SERVER_BIN, png_bytes, scrape_metrics, start_server,
                            stop_server, terminate)


def run_server_expecting_failure(package_dir):
    result = subprocess.run([SERVER_BIN, "--model", package_dir, "--host", "127.0.0.1",
                             "--port", "0", "--metrics-port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ready" not in result.stdout
    return result.stderr


def test_missing_package_fails_clearly(tmp_path):
    stderr = run_server_expecting_failure(str(tmp_path / "nowhere"))
    assert "not found" in stderr


def test_corrupt_package_fails_clearly(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(PACKAGE_DIR, broken)
    (broken / "language_model.pt").write_bytes(b"garbage")
    stderr = run_server_expecting_failure(str(broken))
    assert "TorchScript" in stderr


def test_bad_command_line_exits_2():
    result = subprocess.run([SERVER_BIN, "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--bogus" in result.stderr
    result = subprocess.run([SERVER_BIN], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--model" in result.stderr


def test_sigterm_lets_a_running_request_finish():
    from iblip_client import Client
    server = start_server()
    try:
        with Client(server.address, timeout=60) as client:
            stream = client.generate(png_bytes(), "Describe.", max_new_tokens=60,
                                     min_new_tokens=60)
            first = next(stream)
            terminate(server)
            rest = list(stream)  # the drain lets it finish
            chunks = [first, *rest]
            assert chunks[-1].usage.generated_tokens == 60
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_a_drain_that_times_out_ends_http_streams_with_an_error_and_done():
    server = start_server("--http.enabled", "true", "--http.port", "0", "--drain-timeout-s", "0")
    try:
        with connect(server.http_address) as sock:
            sock.sendall(request_bytes("POST", "/v1/chat/completions",
                                       chat_body(stream=True, max_tokens=500, min_tokens=500)))
            received = b""
            while b"data: " not in received:
                received += sock.recv(65536)
            terminate(server)
            response, _ = read_response(sock, data=received)
    finally:
        assert stop_server(server) == 0, "".join(server.log)
    payloads = events(response.body)
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "unavailable" and "drain timeout" in error["message"]
    assert all("choices" in json.loads(p) for p in payloads[:-2])


def test_a_second_signal_exits_at_once():
    server = start_server("--http.enabled", "true", "--http.port", "0",
                          "--scheduler.max-running-sequences", "1")
    sockets = []
    try:
        for _ in range(8):  # each runs alone: minutes of work queued
            sock = connect(server.http_address)
            sock.sendall(request_bytes("POST", "/v1/chat/completions",
                                       chat_body(max_tokens=500, min_tokens=500)))
            sockets.append(sock)
        deadline = time.monotonic() + 30
        while True:
            metrics = scrape_metrics(server)
            if metrics[("iblip_requests_waiting", ())] + metrics[("iblip_requests_running", ())] == 8:
                break
            assert time.monotonic() < deadline, "the requests were never admitted"
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not any("draining" in line for line in server.log):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 1  # not 0: the drain did not finish
        assert time.monotonic() - started < 5
        assert any("exiting without draining" in line for line in server.log)
    finally:
        for sock in sockets:
            sock.close()
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
