import torch
from torch import nn

from iblip_model.modeling.float32_norms import Float32LayerNorm, layer_norms_in_float32


def _block(dtype):
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64, eps=1e-6), nn.GELU(), nn.LayerNorm(64))
    with torch.no_grad():
        for norm in (block[1], block[3]):
            norm.weight.normal_()
            norm.bias.normal_()
    return block.to(dtype).eval()


def test_bf16_layer_norms_are_swapped_and_round_the_exact_result():
    reference, swapped = _block(torch.bfloat16), layer_norms_in_float32(_block(torch.bfloat16))
    assert [type(m) for m in swapped if isinstance(m, nn.LayerNorm)] == [Float32LayerNorm] * 2
    x = torch.randn(3, 17, 64).to(torch.bfloat16)
    norm, kernel = swapped[1], reference[1]
    with torch.no_grad():
        got, theirs = norm(x), kernel(x)
        exact = nn.functional.layer_norm(x.double(), (64,), kernel.weight.double(),
                                         kernel.bias.double(), kernel.eps)
    assert got.dtype == torch.bfloat16
    # Rounded once, from float32: within one bf16 step (8 bits) of the exact
    # value, and no further from it than ATen's bf16 kernel, which rounds the
    # normalized value before the affine step.
    step = exact.abs().clamp(min=2 ** -100) * 2 ** -7
    error = (got.double() - exact).abs()
    assert (error <= step).all()
    assert error.sum() <= (theirs.double() - exact).abs().sum()


def test_float32_layer_norms_are_left_alone_and_the_swap_scripts():
    block = layer_norms_in_float32(_block(torch.float32))
    assert all(type(m) is nn.LayerNorm for m in block if isinstance(m, nn.LayerNorm))
    bf16 = layer_norms_in_float32(_block(torch.bfloat16))
    scripted = torch.jit.script(bf16)
    x = torch.randn(2, 5, 64).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(scripted(x), bf16(x))
