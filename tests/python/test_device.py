"""runtime.device at the server's door: a malformed device is a config error,
and a GPU this server cannot use (Debian's LibTorch is CPU-only; no machine
has GPU 1023) stops startup with a message naming the option, before any
port is bound. And bench/gpu/run.sh, the GPU check, refuses to start on a
machine without one."""

import os
import shutil
import subprocess

import pytest

from server_harness import PACKAGE_DIR, REPO_DIR, SERVER_BIN


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


GPU_CHECK = os.path.join(REPO_DIR, "bench", "gpu", "run.sh")


def test_gpu_check_scripts_pass_shellcheck():
    scripts = [GPU_CHECK, os.path.join(REPO_DIR, "bench", "gpu", "fetch-debs")]
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_gpu_check_without_a_gpu_exits_2_saying_what_is_missing(tmp_path):
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"]).returncode == 0:
        pytest.skip("this machine has a GPU: bench/gpu/run.sh would run")
    result = subprocess.run([GPU_CHECK, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "IBLIP_GPU_PYTHON": "/usr/bin/python3"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot run here; missing" in result.stderr
    assert "an NVIDIA GPU" in result.stderr
    assert "with a CUDA torch >= 2" in result.stderr  # Debian's torch is 1.13, CPU only
    assert not (tmp_path / "configure.log").exists()  # nothing was built
