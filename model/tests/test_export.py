"""model/export on generated checkpoints: the package, the CLI, bad inputs."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from iblip_model import checkpoint
from iblip_model.export import export
from iblip_model.hf_config import CheckpointError

EXPORT = os.path.join(os.path.dirname(__file__), "..", "export")


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_export_writes_a_verified_package(tiny_checkpoints, tmp_path, family):
    out = tmp_path / "package"
    logs = []
    manifest = export(tiny_checkpoints[family], str(out), log=logs.append)
    files = set(os.listdir(out))
    assert {"manifest.json", "vision_encoder.pt", "qformer.pt", "language_model.pt",
            "lm_tokenizer.model", "qformer_vocab.txt"} <= files
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["lm_family"] == family
    assert manifest["format_version"] == 2
    assert manifest["vision_num_layers"] == 2
    assert manifest["paged_kv_cache"]["cross_attention_blocks"] == (family == "t5")
    assert manifest["paged_kv_cache"]["layers"] == manifest["lm_num_layers"]
    assert manifest["prompt_layout"] == "prepend"
    assert max(manifest["export"]["verification_max_abs_diff"].values()) <= 1e-4
    assert any("verified" in line for line in logs)
    if family == "llama":
        # Vicuna layout: config EOS 1 and tokenizer EOS </s> 2 both stop.
        assert manifest["generation"]["eos_token_ids"] == [1, 2]
        assert manifest["lm_tokenizer"]["bos_token_id"] == 2
        assert manifest["lm_tokenizer"]["append_eos"] is False
    else:
        assert manifest["generation"]["eos_token_ids"] == [1]
        assert manifest["generation"]["decoder_start_token_id"] == 0
        assert manifest["lm_tokenizer"]["append_eos"] is True
        assert manifest["lm_tokenizer"]["bos_token_id"] == -1


def test_bf16_export(tiny_checkpoints, tmp_path):
    manifest = export(tiny_checkpoints["llama"], str(tmp_path / "p"), dtype="bf16", log=lambda _: None)
    assert manifest["dtype"] == "bf16"
    lm = torch.jit.load(str(tmp_path / "p" / "language_model.pt"))
    assert lm.embed(torch.tensor([[3, 4]])).dtype == torch.float32  # boundaries stay float32


def test_export_replaces_an_old_package_but_not_other_directories(tiny_checkpoints, tmp_path):
    out = tmp_path / "package"
    export(tiny_checkpoints["llama"], str(out), log=lambda _: None)
    export(tiny_checkpoints["llama"], str(out), log=lambda _: None)  # re-export in place
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="refusing"):
        export(tiny_checkpoints["llama"], str(precious), log=lambda _: None)
    assert (precious / "notes.txt").read_text() == "keep me"


def _broken_copy(source, tmp_path):
    target = tmp_path / "broken"
    shutil.copytree(source, target)
    return target


def _rewrite_weights(target, mutate):
    state = checkpoint.load_state_dict(str(target))
    mutate(state)
    os.remove(target / "pytorch_model.bin")
    checkpoint.save_state_dict(str(target), state, "bin")


BROKEN = {
    "missing key": (lambda t: _rewrite_weights(t, lambda s: s.pop("language_projection.bias")),
                    "missing key 'language_projection.bias'"),
    "wrong shape": (lambda t: _rewrite_weights(
        t, lambda s: s.__setitem__("query_tokens", torch.zeros(1, 3, 64))),
                    "key 'query_tokens' has shape"),
    "unexpected key": (lambda t: _rewrite_weights(t, lambda s: s.__setitem__("extra.weight", torch.zeros(1))),
                       "unexpected key 'extra.weight'"),
    "unknown model_type": (lambda t: _edit_config(t, lambda c: c["text_config"].__setitem__("model_type", "gpt2")),
                           "model_type 'gpt2' is not supported"),
    "truncated weights": (lambda t: _truncate(t / "pytorch_model.bin"), "pytorch_model.bin"),
    "missing tokenizer": (lambda t: os.remove(t / "tokenizer.model"), "tokenizer.model: not found"),
    "missing Q-Former vocab": (lambda t: os.remove(t / "qformer_tokenizer" / "vocab.txt"),
                               "vocab.txt: not found"),
    "no config": (lambda t: os.remove(t / "config.json"), "config.json: not found"),
}


def _edit_config(target, mutate):
    config = json.loads((target / "config.json").read_text())
    mutate(config)
    (target / "config.json").write_text(json.dumps(config))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_checkpoints_fail_clearly_and_write_nothing(tiny_checkpoints, tmp_path, case):
    breaker, message = BROKEN[case]
    target = _broken_copy(tiny_checkpoints["llama"], tmp_path)
    breaker(target)
    out = tmp_path / "out" / "package"
    with pytest.raises(CheckpointError) as error:
        export(str(target), str(out), log=lambda _: None)
    assert message in str(error.value)
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".export-")] \
        if (tmp_path / "out").exists() else True


def test_truncated_safetensors(tiny_checkpoints, tmp_path):
    target = _broken_copy(tiny_checkpoints["llama"], tmp_path)
    state = checkpoint.load_state_dict(str(target))
    os.remove(target / "pytorch_model.bin")
    checkpoint.save_state_dict(str(target), state, "safetensors")
    _truncate(target / "model.safetensors")
    with pytest.raises(CheckpointError, match="truncated"):
        export(str(target), str(tmp_path / "out"), log=lambda _: None)


def test_cli_reports_errors_and_success(tiny_checkpoints, tmp_path):
    bad = subprocess.run([sys.executable, EXPORT, "--checkpoint", str(tmp_path / "nothing"),
                          "--output", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "config.json: not found" in bad.stderr
    good = subprocess.run([sys.executable, EXPORT, "--checkpoint", tiny_checkpoints["t5"],
                           "--output", str(tmp_path / "ok")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "verified" in good.stdout and (tmp_path / "ok" / "manifest.json").exists()
