"""Dynamic int8 quantization of Linear layers (model/export --dtype int8):
weights int8 per output channel, each call's input quantized on the fly,
on torch's oneDNN engine (Debian's torch has no FBGEMM; the C++ runtime
uses oneDNN too)."""

import torch
from torch import nn

from iblip_model.hf_config import CheckpointError


def _engine():
    engines = torch.backends.quantized.supported_engines
    if "onednn" not in engines:
        raise CheckpointError(f"--dtype int8: this torch has no oneDNN quantized engine ({engines})")
    torch.backends.quantized.engine = "onednn"


def quantize_linear(linear):
    """The int8 dynamic twin of an fp32 nn.Linear."""
    linear.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    return torch.ao.nn.quantized.dynamic.Linear.from_float(linear)


def quantize_linear_layers(model, ready=lambda name: True):
    """Replaces, in place, every fp32 nn.Linear of `model` for which
    ready(its qualified name) holds; returns the model."""
    _engine()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) is nn.Linear and ready(name):
                setattr(parent, child_name, quantize_linear(child))
    return model
