"""Startup and shutdown: bad packages never report ready; SIGTERM drains."""

import os
import shutil
import subprocess
import threading

import grpc

from server_harness import PACKAGE_DIR, SERVER_BIN, png_bytes, start_server, stop_server


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
            server.process.send_signal(15)
            rest = list(stream)  # the drain lets it finish
            chunks = [first, *rest]
            assert chunks[-1].usage.generated_tokens == 60
    finally:
        assert stop_server(server) == 0, "".join(server.log)
