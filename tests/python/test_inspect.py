"""iblip-inspect against the Hugging Face processor's own outputs."""

import json
import os
import subprocess

import numpy as np
import pytest

from server_harness import BUILD_DIR

INSPECT = os.path.join(BUILD_DIR, "model", "iblip-inspect")
FIXTURES = os.environ.get("IBLIP_FIXTURES_DIR",
                          os.path.join(os.path.dirname(__file__), "..", "fixtures"))
PACKAGES = os.path.join(BUILD_DIR, "fixture-packages")
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def inspect(*args):
    return subprocess.run([INSPECT, *args], capture_output=True, text=True, timeout=60)


def processor_cases():
    with open(os.path.join(FIXTURES, "processor", "index.json"), encoding="utf-8") as f:
        return json.load(f)["cases"]


@pytest.mark.parametrize("case", processor_cases(), ids=lambda c: c["image"])
def test_preprocess_matches_the_processor(tmp_path, case):
    out = tmp_path / "pixels.npy"
    result = inspect("preprocess", "--model", os.path.join(PACKAGES, "tiny-llama"),
                     os.path.join(FIXTURES, "processor", case["image"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    ours = np.load(out)
    reference = np.load(os.path.join(FIXTURES, "processor", case["pixel_values"]))
    assert ours.shape == reference.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    step = 1.0 / (255.0 * STD)[None, :, None, None]
    assert (np.abs(ours - reference) <= step * (1 + 1e-4)).all()
    assert (np.abs(ours - reference) <= 1e-6).mean() >= 0.99


@pytest.mark.parametrize("checkpoint", ["tiny-llama", "tiny-t5"])
def test_tokenize_matches_the_processor(checkpoint):
    with open(os.path.join(FIXTURES, "tokens", f"{checkpoint}.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    for case in cases:
        result = inspect("tokenize", "--model", os.path.join(PACKAGES, checkpoint), "--text", case["text"])
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"input_ids": case["input_ids"],
                                             "qformer_input_ids": case["qformer_input_ids"]}


def test_errors(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    package = os.path.join(PACKAGES, "tiny-llama")
    bad_image = inspect("preprocess", "--model", package, str(junk), "--out", str(tmp_path / "x.npy"))
    assert bad_image.returncode == 1 and "PNG image is corrupt" in bad_image.stderr
    assert inspect("preprocess", "--model", package).returncode == 2
    assert inspect("frobnicate", "--model", package).returncode == 2
    missing = inspect("tokenize", "--model", str(tmp_path), "--text", "x")
    assert missing.returncode == 1 and "manifest.json" in missing.stderr
