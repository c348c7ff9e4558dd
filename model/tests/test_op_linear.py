"""The bf16 language model's Linear layers routed through iblip::linear
(modeling/op_linear.py) and what export makes of it. The C++ kernel itself is
checked in tests/unit/linear_op_test.cc and bf16_row_dot_test.cc."""

import os

import torch
from torch import nn

from iblip_model import ops
from iblip_model.export import export
from iblip_model.modeling.op_linear import OpLinear, route_linears_through_op


def _block(bias):
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(32, 48, bias=bias), nn.GELU())
    return nn.Sequential(inner, nn.Linear(48, 16, bias=not bias)).to(torch.bfloat16).eval()


def test_every_linear_is_routed_and_computes_the_same():
    for bias in (True, False):
        reference, routed = _block(bias), _block(bias)
        weight = routed[1].weight
        assert route_linears_through_op(routed) == 2
        assert [type(m) for m in routed.modules() if isinstance(m, (nn.Linear, OpLinear))] == \
            [OpLinear, OpLinear]
        assert routed[1].weight is weight and routed[0][0].out_features == 48
        x = torch.randn(3, 1, 32).to(torch.bfloat16)
        scripted = torch.jit.script(routed)
        assert str(scripted.inlined_graph).count("iblip::linear") == 2
        with torch.no_grad():
            expected = reference(x)
            if not ops.native_kernel_loaded():  # the reference is aten::linear itself
                assert torch.equal(routed(x), expected)
                assert torch.equal(scripted(x), expected)
            else:  # the C++ kernel may round the last bit another way
                assert (routed(x).float() - expected.float()).abs().max() <= 0.05


def test_subclasses_and_other_modules_are_left_alone():
    class Special(nn.Linear):
        pass
    block = nn.Sequential(Special(4, 4), nn.LayerNorm(4))
    assert route_linears_through_op(block) == 0
    assert type(block[0]) is Special


def test_only_bf16_packages_call_the_operator(tiny_checkpoints, tmp_path):
    for dtype in ("bf16", "fp32"):
        out = tmp_path / dtype
        manifest = export(tiny_checkpoints["llama"], str(out), dtype=dtype, log=lambda _: None)
        lm = torch.jit.load(os.path.join(out, "language_model.pt"))
        calls = "iblip::linear" in str(lm.decode_paged.graph)
        assert calls == (dtype == "bf16")
        assert ("iblip::linear" in manifest["custom_ops"]) == (dtype == "bf16")


def test_module_bench_times_every_weight_of_a_bf16_package(tiny_checkpoints, tmp_path):
    from iblip_model import module_bench
    out = tmp_path / "bf16"
    export(tiny_checkpoints["llama"], str(out), dtype="bf16", log=lambda _: None)
    try:
        results = module_bench.linear(str(out), runs=1, rows_list=[1, 2], context=8)
    finally:
        module_bench._set_executor(True)  # TorchScript's default, for the tests after this one
    lm = torch.jit.load(os.path.join(out, "language_model.pt"))
    count = str(lm.decode_paged.graph).count("iblip::linear")
    for rows in (1, 2):
        times = results[f"all {count} weights in turn, {rows} rows"]
        assert times["iblip::linear"] > 0 and times["aten::linear"] > 0 and times["iblip GB/s"] > 0
        assert f"decode_paged (batch {rows}, context 8)" in results
