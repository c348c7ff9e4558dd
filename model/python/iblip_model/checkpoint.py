"""Reads (and, for tests and generated checkpoints, writes) Hugging Face
weight files: pytorch_model.bin, sharded pytorch_model-*.bin with an index,
model.safetensors and sharded safetensors with an index. No safetensors
package in Debian, so the format is read here: an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}}, raw
little-endian tensor bytes."""

import json
import os
import struct

import torch

from iblip_model.hf_config import CheckpointError

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
_MAX_HEADER_BYTES = 100 << 20


def read_safetensors(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated (no safetensors header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, _MAX_HEADER_BYTES):
            raise CheckpointError(f"{path}: header length {header_len} exceeds the file")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: malformed safetensors header ({e})") from e
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')}")
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = 1
        for dim in shape:
            count *= dim
        if end > len(data) or begin > end:
            raise CheckpointError(f"{path}: truncated (tensor '{name}' ends past the file)")
        element = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * element:
            raise CheckpointError(f"{path}: tensor '{name}' has {end - begin} bytes, "
                                  f"shape {shape} needs {count * element}")
        raw = bytearray(data[begin:end])
        tensor = torch.frombuffer(raw, dtype=dtype) if count else torch.empty(0, dtype=dtype)
        tensors[name] = tensor.reshape(shape)
    return tensors


def write_safetensors(path, tensors, metadata=None):
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, tensor in tensors.items():
        t = tensor.detach().contiguous().cpu()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # align the data as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)


def _read_bin(path):
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as e:  # torch raises many types for a damaged archive
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: does not hold a state dict")
    return state


def _read_sharded(directory, index_name, reader):
    """Yields the shards' tensors one shard at a time (a 7B checkpoint never
    needs to be in memory whole)."""
    index_path = os.path.join(directory, index_name)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path}: malformed index ({e})") from e
    seen = set()
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(directory, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"{index_path}: names shard {shard}, which is missing")
        tensors = reader(shard_path)
        seen.update(tensors)
        yield tensors
    missing = sorted(set(weight_map) - seen)
    if missing:
        raise CheckpointError(f"{index_path}: key '{missing[0]}' is not in its shard")


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")


def iter_state_dict(directory):
    """The checkpoint's tensors as stored (dtype unchanged), one dict per
    weight file."""
    if os.path.isfile(os.path.join(directory, "model.safetensors")):
        yield read_safetensors(os.path.join(directory, "model.safetensors"))
    elif os.path.isfile(os.path.join(directory, "model.safetensors.index.json")):
        yield from _read_sharded(directory, "model.safetensors.index.json", read_safetensors)
    elif os.path.isfile(os.path.join(directory, "pytorch_model.bin")):
        yield _read_bin(os.path.join(directory, "pytorch_model.bin"))
    elif os.path.isfile(os.path.join(directory, "pytorch_model.bin.index.json")):
        yield from _read_sharded(directory, "pytorch_model.bin.index.json", _read_bin)
    else:
        raise CheckpointError(f"{directory}: no weights (looked for {', '.join(WEIGHT_FILES)})")


def load_state_dict(directory):
    """All tensors of the checkpoint, as stored (dtype unchanged)."""
    state = {}
    for shard in iter_state_dict(directory):
        state.update(shard)
    return state


def save_state_dict(directory, state, fmt="bin", max_shard_bytes=None):
    """Writes `state` in one of the layouts: bin, safetensors (sharded when
    max_shard_bytes is given)."""
    save_lazily(directory, [(name, t.numel() * t.element_size()) for name, t in state.items()],
                state.__getitem__, fmt, max_shard_bytes)


def save_lazily(directory, sizes, make, fmt="bin", max_shard_bytes=None):
    """Like save_state_dict for [(name, bytes)] whose tensors make(name)
    creates, in order, one shard at a time: a checkpoint larger than memory
    can be written."""
    if fmt not in ("bin", "safetensors"):
        raise ValueError(fmt)
    single = "pytorch_model.bin" if fmt == "bin" else "model.safetensors"
    write = (lambda p, s: torch.save(s, p)) if fmt == "bin" else write_safetensors
    if not max_shard_bytes:
        write(os.path.join(directory, single), {name: make(name) for name, _ in sizes})
        return
    shards, current, size = [], [], 0
    for name, nbytes in sizes:
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    stem, ext = single.rsplit(".", 1)
    weight_map = {}
    for i, names in enumerate(shards):
        file_name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}"
        write(os.path.join(directory, file_name), {name: make(name) for name in names})
        weight_map.update({k: file_name for k in names})
    with open(os.path.join(directory, single + ".index.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
