"""Pieces shared by the submodels."""

import torch
from torch import nn


class Activation(nn.Module):
    """The Hugging Face activations InstructBLIP checkpoints name."""

    kind: torch.jit.Final[str]

    def __init__(self, name: str):
        super().__init__()
        if name not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"):
            raise ValueError(f"unsupported activation '{name}'")
        self.kind = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "gelu":
            return nn.functional.gelu(x)  # exact (erf)
        if self.kind == "relu":
            return nn.functional.relu(x)
        if self.kind == "silu":
            return nn.functional.silu(x)
        return nn.functional.gelu(x, approximate="tanh")


def min_value(dtype: torch.dtype) -> float:
    """torch.finfo(dtype).min (finfo is not scriptable in torch 1.13)."""
    if dtype == torch.bfloat16:
        return -3.3895313892515355e38
    if dtype == torch.float16:
        return -65504.0
    if dtype == torch.float64:
        return -1.7976931348623157e308
    return -3.4028234663852886e38


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1/0 keep mask -> 0 / dtype-min, as Hugging Face builds attention masks."""
    return (1.0 - keep.to(dtype)) * min_value(dtype)
