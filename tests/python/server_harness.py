"""Runs the real iblip-server binary on 127.0.0.1 (free ports) with the tiny
random package, and always stops it; helpers for the client tests."""

import io
import os
import signal
import subprocess
import threading
import time

REPO_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD_DIR = os.environ.get("IBLIP_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
PACKAGE_DIR = os.environ.get("IBLIP_TINY_PACKAGE_DIR", os.path.join(BUILD_DIR, "tiny-package"))
SERVER_BIN = os.path.join(BUILD_DIR, "server", "iblip-server")
CLIENT_BIN = os.path.join(BUILD_DIR, "client", "iblip-client")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class RunningServer:
    def __init__(self, process, address, metrics_address, log, log_reader, http_address=None):
        self.process = process
        self.address = address
        self.metrics_address = metrics_address
        self.http_address = http_address  # when started with --http.enabled true
        self.log = log  # list of stderr lines, filled by a thread
        self._log_reader = log_reader
        self.terminated = False  # SIGTERM sent (a second one exits at once)

    def whole_log(self, timeout=10):
        """Every stderr line, once the process has exited and its last
        lines have been read (self.log may still lack them then)."""
        self.process.wait(timeout)
        self._log_reader.join(timeout)
        assert not self._log_reader.is_alive(), "the server's stderr is still open"
        return list(self.log)


def start_server(*extra_args, package_dir=PACKAGE_DIR, start_timeout=START_TIMEOUT_S):
    args = [SERVER_BIN, "--model", package_dir, "--host", "127.0.0.1", "--port", "0",
            "--metrics-port", "0", "--threads", "1", *extra_args]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = []
    log_reader = threading.Thread(target=lambda: log.extend(process.stderr), daemon=True)
    log_reader.start()
    ready = {}

    def read_ready_line():
        for line in process.stdout:
            if line.startswith("iblip-server ready"):
                ready.update(kv.split("=", 1) for kv in line.split()[2:])
                return

    reader = threading.Thread(target=read_ready_line, daemon=True)
    reader.start()
    reader.join(start_timeout)
    if "grpc" not in ready:
        process.kill()
        process.wait()
        raise RuntimeError("server did not become ready:\n" + "".join(log))
    http = ready.get("http")
    return RunningServer(process, ready["grpc"], ready["metrics"], log, log_reader,
                         None if http is None or http.endswith(":0") else http)


def terminate(server):
    """SIGTERM once: the server drains (a second SIGTERM would not wait)."""
    if not server.terminated:
        server.terminated = True
        server.process.send_signal(signal.SIGTERM)


def stop_server(server):
    """SIGTERM (unless sent already), then the exit code (a graceful drain
    exits 0)."""
    if server.process.poll() is None:
        terminate(server)
        try:
            return server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
            raise
    return server.process.returncode


def png_bytes(width=64, height=48, color=(200, 30, 30)):
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def run_client(*args, timeout=60, binary=False):
    return subprocess.run([CLIENT_BIN, *args], capture_output=True, text=not binary, timeout=timeout)


def wait_until(condition, timeout=30, what="the condition"):
    """Polls `condition` until it returns something true and returns that;
    fails after `timeout` seconds. For states the server pushes no signal
    for (a gauge, a health status): the wait ends on the state itself, not
    after a guessed time."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def metric(samples, name, **labels):
    """One sample of a scrape_metrics() result; 0 when absent (a counter
    or histogram that has not been touched yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_metrics(server):
    """{(name, ((label, value), ...)): value} from /metrics, parsed by the
    Prometheus client library (so a malformed exposition fails the test)."""
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
