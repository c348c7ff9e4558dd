"""The language model's Linear layers as calls to `iblip::linear` (ops.py),
in bf16 packages. One sequence's decode step multiplies one row by every
weight of the language model, so its cost is reading those weights; for one
row oneDNN's bf16 matrix product reads them at about 14-19 GB/s here, the C++
operator's row-dot kernel at 22-29 GB/s (model/runtime/bf16_row_dot.h).
Every other call (prefill, batched decode, other dtypes) is aten::linear
itself."""

from typing import Optional

import torch
from torch import nn

from iblip_model import ops  # noqa: F401  (registers torch.ops.iblip.linear)


class OpLinear(nn.Module):
    """nn.Linear's weights and result, through torch.ops.iblip.linear."""

    in_features: torch.jit.Final[int]
    out_features: torch.jit.Final[int]

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias: Optional[nn.Parameter] = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.iblip.linear(x, self.weight, self.bias)


def route_linears_through_op(module: nn.Module) -> int:
    """Replaces every nn.Linear under `module` (not subclasses, not the int8
    dynamic ones) with an OpLinear sharing its parameters; returns how many."""
    replaced = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, OpLinear(child))
            replaced += 1
        else:
            replaced += route_linears_through_op(child)
    return replaced
