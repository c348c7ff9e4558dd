"""Every weight layout and dtype Hugging Face checkpoints come in loads to
the same tensors."""

import os
import shutil

import pytest
import torch

from iblip_model import checkpoint
from iblip_model.hf_config import CheckpointError
from iblip_model.modeling.instructblip import load_pretrained

LAYOUTS = [("bin", None), ("bin", 1), ("safetensors", None), ("safetensors", 1)]


def _copy_without_weights(source, destination):
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(
        "pytorch_model*", "model.safetensors*", "model-*"))


@pytest.mark.parametrize("fmt,shard_mb", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_layouts_round_trip(tiny_checkpoints, tmp_path, fmt, shard_mb, dtype):
    original = checkpoint.load_state_dict(tiny_checkpoints["llama"])
    state = {k: v.to(dtype) for k, v in original.items()}
    target = tmp_path / "ckpt"
    _copy_without_weights(tiny_checkpoints["llama"], target)
    checkpoint.save_state_dict(str(target), state, fmt, max_shard_bytes=shard_mb and shard_mb << 20)
    if shard_mb:
        assert len([n for n in os.listdir(target) if n.endswith(".bin") or n.endswith(".safetensors")]) > 1
    loaded = checkpoint.load_state_dict(str(target))
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == dtype
        assert torch.equal(loaded[name], tensor), name
    model = load_pretrained(str(target))  # every layout gives a working model
    assert next(model.parameters()).dtype == torch.float32


def test_safetensors_reader_handles_every_dtype(tmp_path):
    tensors = {"f32": torch.randn(3, 2), "f16": torch.randn(4).half(), "bf16": torch.randn(2, 2).bfloat16(),
               "i64": torch.arange(5), "empty": torch.zeros(0, 3)}
    path = str(tmp_path / "x.safetensors")
    checkpoint.write_safetensors(path, tensors, metadata={"format": "pt"})
    loaded = checkpoint.read_safetensors(path)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_optional_buffers_are_tolerated(tiny_checkpoints, tmp_path):
    target = tmp_path / "ckpt"
    _copy_without_weights(tiny_checkpoints["llama"], target)
    state = checkpoint.load_state_dict(tiny_checkpoints["llama"])
    state["qformer.embeddings.position_ids"] = torch.arange(512)[None]
    state["language_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    checkpoint.save_state_dict(str(target), state, "safetensors")
    load_pretrained(str(target))


def test_no_weights_is_a_clear_error(tiny_checkpoints, tmp_path):
    target = tmp_path / "ckpt"
    _copy_without_weights(tiny_checkpoints["llama"], target)
    with pytest.raises(CheckpointError, match="no weights"):
        checkpoint.load_state_dict(str(target))
