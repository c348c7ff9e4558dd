"""runtime.device at the server's door: a malformed device is a config error,
and a GPU this server cannot use (Debian's LibTorch is CPU-only; no machine
has GPU 1023) stops startup with a message naming the option, before any
port is bound."""

import subprocess

import pytest

from server_harness import PACKAGE_DIR, SERVER_BIN


def start(device):
    return subprocess.run(
        [SERVER_BIN, "--model", PACKAGE_DIR, "--host", "127.0.0.1", "--port", "0",
         "--metrics-port", "0", "--runtime.device", device],
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "cuda:01", "CUDA"])
def test_a_malformed_device_is_a_config_error(device):
    result = start(device)
    assert result.returncode == 2, result.stderr  # a usage error, as any bad option
    assert f"runtime.device must be cpu, cuda or cuda:N (N from 0 to 1023), got '{device}'" \
        in result.stderr


def test_a_gpu_the_server_cannot_use_stops_startup_naming_the_option():
    result = start("cuda:1023")
    assert result.returncode == 1, result.stderr
    assert "FAILED_PRECONDITION" in result.stderr and "runtime.device is cuda:1023" in result.stderr
