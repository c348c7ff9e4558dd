"""Startup and shutdown: bad packages never report ready; SIGTERM drains,
sending GOAWAY at once; a drain that times out ends HTTP streams with an
error event and [DONE]; a second signal exits at once; liveness notices a
stalled engine."""

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
                            stop_server, terminate, wait_until)


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


def waiting_requests(server):
    return scrape_metrics(server)[("iblip_requests_waiting", ())]


def test_sigterm_sends_goaway_at_once_and_the_held_request_still_finishes():
    """The drain's GOAWAY reaches the client before the request the server
    holds has produced a token (a 5 s vision batching delay holds it), so a
    balanced client sends its next calls elsewhere at once; the request then
    finishes in full."""
    from iblip_client import Client
    server = start_server("--scheduler.vision-max-queue-delay-us", "5000000")
    try:
        channel = grpc.insecure_channel(server.address)
        left_ready = threading.Event()
        seen_ready = threading.Event()

        def on_state(state):
            if state == grpc.ChannelConnectivity.READY:
                seen_ready.set()
            elif seen_ready.is_set():
                left_ready.set()

        channel.subscribe(on_state, try_to_connect=True)
        client = Client(server.address, channel=channel, timeout=60)
        stream = client.generate(png_bytes(), "Describe.", max_new_tokens=8, min_new_tokens=8)
        result = {}

        def consume():
            tokens = 0
            for message in stream:
                if message.token_ids and "first_token" not in result:
                    result["first_token"] = time.monotonic()
                tokens += len(message.token_ids)
            result["tokens"] = tokens

        reader = threading.Thread(target=consume)
        reader.start()
        wait_until(lambda: waiting_requests(server) == 1, what="the request to be queued")
        # gRPC Python reports connectivity on its own polling thread, which
        # can lag behind the request reaching the server (CI saw it unset).
        assert seen_ready.wait(10), "the channel never reported READY"
        terminate(server)
        assert left_ready.wait(30), "the channel never left READY: no GOAWAY"
        goaway_seen = time.monotonic()
        reader.join(60)
        assert result.get("tokens") == 8, result
        assert goaway_seen < result["first_token"]
        channel.unsubscribe(on_state)
        channel.close()
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_liveness_fails_when_work_waits_without_an_engine_step():
    """With work pending and no engine step for longer than
    engine_stall_timeout_s (a batching delay well above it stands in for a
    hung model call; the warm-up waits it out once at startup), 'liveness'
    and readiness say NOT_SERVING; an idle engine stays live however long
    it idles."""
    from iblip_client import Client
    server = start_server("--engine-stall-timeout-s", "1", "--drain-timeout-s", "2",
                          "--scheduler.vision-max-queue-delay-us", "10000000")
    try:
        with Client(server.address, timeout=10) as client:
            assert client.health("liveness") and client.health("")
            time.sleep(1.5)  # idle for longer than the stall timeout
            assert client.health("liveness")
            stream = client.generate(png_bytes(), "Describe.", max_new_tokens=2, timeout=120)
            wait_until(lambda: waiting_requests(server) == 1, what="the request to be queued")
            wait_until(lambda: not client.health("liveness"), what="liveness to fail")
            assert not client.health("")
            assert not client.health("iblip.v1.InstructBlipService")
            stream.cancel()
        # The harness reads the server's stderr on a thread of its own, which
        # a busy machine can run late.
        wait_until(lambda: any("engine stalled" in line for line in server.log),
                   timeout=10, what="'engine stalled' in the server's log")
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_max_request_time_ends_a_request_the_client_would_let_run():
    """limits.max_request_time_s bounds a request whatever the client's
    deadline (what lets drain_timeout_s promise every generation its end):
    held 3 s by the vision batching delay, a request allowed 1 s ends with
    DEADLINE_EXCEEDED although its client waits 60 s."""
    from iblip_client import Client
    server = start_server("--limits.max-request-time-s", "1",
                          "--scheduler.vision-max-queue-delay-us", "3000000")
    try:
        with Client(server.address, timeout=60) as client:
            started = time.monotonic()
            try:
                client.generate_unary(png_bytes(), "Describe.", max_new_tokens=2)
                raise AssertionError("the request outlived max_request_time_s")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
            assert time.monotonic() - started < 30
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
        assert any("exiting without draining" in line for line in server.whole_log())
    finally:
        for sock in sockets:
            sock.close()
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
