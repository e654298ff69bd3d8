"""QuantLinear: forward vs F.linear on its dequantized weight, state_dict, dtype moves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import quantcore
from quantcore import QuantLinear, RTNConfig


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [32, 64, -1, 0])
@pytest.mark.parametrize("sym", [True, False])
def test_forward_matches_dequantized_linear(bits, group_size, sym):
    torch.manual_seed(bits + group_size)
    lin = torch.nn.Linear(128, 48)
    q = QuantLinear.from_linear(lin, RTNConfig(bits=bits, group_size=group_size, sym=sym))
    x = torch.randn(5, 7, 128)
    ref = F.linear(x, q.dequantize(torch.float32), lin.bias)
    assert torch.allclose(q(x), ref, rtol=1e-5, atol=1e-5)
    assert q.weight_bits_per_element() < bits + 1


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_odd_group_sizes_run(bits):
    # The CPU kernels take even 4-bit groups only; odd ones fall back to dequantize + linear.
    lin = torch.nn.Linear(96, 8)
    q = QuantLinear.from_linear(lin, RTNConfig(bits=bits, group_size=3))
    x = torch.randn(4, 96)
    assert torch.allclose(q(x), F.linear(x, q.dequantize(torch.float32), lin.bias), rtol=1e-5, atol=1e-5)


def test_from_linear_does_not_touch_source_and_error_is_small():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    before = lin.weight.detach().clone()
    q = QuantLinear.from_linear(lin, RTNConfig(bits=8, group_size=64))
    assert torch.equal(lin.weight, before)
    rel = (q.dequantize() - before).norm() / before.norm()
    assert rel < 0.01


def test_conv1d_is_handled_as_transposed_linear():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(48, 64)  # nf=48 outputs, nx=64 inputs, weight [64, 48]
    torch.nn.init.normal_(conv.weight, std=0.02)
    q = QuantLinear.from_linear(conv, RTNConfig(bits=8, group_size=32))
    x = torch.randn(3, 64)
    assert q.in_features == 64 and q.out_features == 48
    ref = conv(x).detach()
    assert float((q(x) - ref).abs().max() / ref.abs().max()) < 0.02
    rel = (q.dequantize() - conv.weight.detach().t()).norm() / conv.weight.norm()
    assert rel < 0.01


def test_state_dict_round_trip():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    q = QuantLinear.from_linear(lin, RTNConfig(bits=4, group_size=32, sym=False))
    sd = q.state_dict()
    assert set(sd) == {"qweight", "scales", "zeros", "bias"}
    q2 = QuantLinear(64, 32, bits=4, group_size=32, sym=False)
    q2.load_state_dict(sd)
    x = torch.randn(4, 64)
    assert torch.equal(q(x), q2(x))
    q3 = QuantLinear(64, 32, bits=4, group_size=32, sym=True, bias=False)
    with pytest.raises(RuntimeError):
        q3.load_state_dict(sd)  # strict: unexpected zeros/bias


def test_load_rejects_corrupt_zeros_and_scales():
    q = QuantLinear(64, 32, bits=4, group_size=32, sym=False)
    sd = q.state_dict()
    sd["zeros"] = torch.full_like(sd["zeros"], 200)
    with pytest.raises(ValueError, match="zeros"):
        q.load_state_dict(sd)
    sd = QuantLinear(64, 32, bits=4, group_size=32, sym=False).state_dict()
    sd["scales"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="scales"):
        q.load_state_dict(sd)


def test_to_dtype_keeps_scales_exact():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    q = QuantLinear.from_linear(lin, RTNConfig(bits=4, group_size=32))
    scales = q.scales.clone()
    q.to(torch.bfloat16)
    assert q.scales.dtype == torch.float16 and torch.equal(q.scales, scales)
    assert q.bias.dtype == torch.bfloat16
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    assert q(x).dtype == torch.bfloat16
    q.half().float()
    assert torch.equal(q.scales, scales)


def test_bad_inputs():
    with pytest.raises(ValueError, match="divide"):
        QuantLinear(100, 8, group_size=32)
    with pytest.raises(ValueError, match="multiple of 32"):
        QuantLinear(12, 8, bits=4, group_size=4)
    with pytest.raises(ValueError, match="bits"):
        QuantLinear(64, 8, bits=9)
    with pytest.raises(TypeError):
        QuantLinear.from_linear(torch.nn.Conv2d(3, 3, 3), RTNConfig())
    q = QuantLinear(64, 8, group_size=32)
    with pytest.raises(ValueError, match="features"):
        q(torch.randn(2, 32))
    with pytest.raises(TypeError, match="float"):
        q(torch.randint(0, 3, (2, 64)))
    lin = torch.nn.Linear(64, 8)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        QuantLinear.from_linear(lin, RTNConfig(group_size=32))


def test_non_contiguous_input_is_accepted_by_the_module():
    q = QuantLinear.from_linear(torch.nn.Linear(64, 16), RTNConfig(bits=4, group_size=32))
    x = torch.randn(64, 5).t()
    assert torch.allclose(q(x), q(x.contiguous()))


def test_configs_validate():
    with pytest.raises(ValueError):
        RTNConfig(bits=1)
    with pytest.raises(TypeError):
        RTNConfig(bits=4.0)
    with pytest.raises(ValueError):
        RTNConfig(group_size=-5)
    with pytest.raises(TypeError):
        RTNConfig(scale_dtype=torch.int8)
    with pytest.raises(ValueError):
        RTNConfig(clip_max_shrink=1.5)
    cfg = RTNConfig(bits=3, group_size=64, sym=False, mse_clip=True)
    assert RTNConfig.from_dict(cfg.to_dict()) == cfg


def test_from_codes_and_dequantize_validate():
    codes = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    scales = torch.rand(8, 2, dtype=torch.float16)
    layer = QuantLinear.from_codes(codes, scales, None, None, bits=4, group_size=32)
    assert torch.equal(quantcore.ops.unpack(layer.qweight, 4), codes)
    with pytest.raises(ValueError, match="scales must be"):
        QuantLinear.from_codes(codes, scales[:, :1], None, None, bits=4, group_size=32)
    with pytest.raises(ValueError, match="zeros must have"):
        QuantLinear.from_codes(codes, scales, torch.zeros(8, 1, dtype=torch.uint8), None, bits=4, group_size=32)
    with pytest.raises(ValueError, match="bias"):
        QuantLinear.from_codes(codes, scales, None, torch.zeros(3), bits=4, group_size=32)
    with pytest.raises(TypeError, match="uint8"):
        QuantLinear.from_codes(codes.int(), scales, None, None, bits=4, group_size=32)
    with pytest.raises(ValueError, match="does not fit"):
        QuantLinear.from_codes(codes + 16, scales, None, None, bits=4, group_size=32)
    qw = layer.qweight
    with pytest.raises(ValueError, match="scales must be"):
        quantcore.ops.dequantize(qw, scales[:, :1], None, 4, 32)
    with pytest.raises(ValueError, match="does not divide"):
        quantcore.ops.dequantize(qw, scales, None, 4, 48)
    with pytest.raises(TypeError, match="int32"):
        quantcore.ops.dequantize(qw.float(), scales, None, 4, 32)
    with pytest.raises(ValueError, match="zeros must be"):
        quantcore.ops.dequantize(qw, scales, torch.zeros(8, 2, dtype=torch.int32), 4, 32)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_from_codes_with_g_idx_matches_the_gptq_definition(bits):
    # GPTQ act-order: column c uses grid g_idx[c]; any assignment with
    # group_size columns per group is accepted.
    g = torch.Generator().manual_seed(bits)
    out_f, in_f, gs = 16, 64, 16
    codes = torch.randint(0, 2**bits, (out_f, in_f), generator=g, dtype=torch.uint8)
    scales = torch.rand(out_f, in_f // gs, generator=g) + 0.1
    zeros = torch.randint(0, 2**bits, (out_f, in_f // gs), generator=g, dtype=torch.uint8)
    g_idx = (torch.arange(in_f) // gs)[torch.randperm(in_f, generator=g)].int()
    layer = QuantLinear.from_codes(codes, scales, zeros, None, bits=bits, group_size=gs, g_idx=g_idx)
    expected = (codes.float() - zeros.float()[:, g_idx.long()]) * scales[:, g_idx.long()]
    assert torch.allclose(layer.dequantize(), expected)
    assert torch.equal(layer.g_idx, g_idx)
    x = torch.randn(5, in_f, generator=g)
    assert torch.allclose(layer(x), x @ expected.t(), atol=1e-4)
    trivial = QuantLinear.from_codes(codes, scales, zeros, None, bits=bits, group_size=gs,
                                     g_idx=torch.arange(in_f) // gs)
    assert trivial.perm is None  # an ordinary grouping needs no permutation


def test_bad_g_idx_and_corrupt_perm_are_refused():
    codes = torch.zeros(4, 64, dtype=torch.uint8)
    scales = torch.ones(4, 2)
    with pytest.raises(ValueError, match="exactly group_size"):
        QuantLinear.from_codes(codes, scales, None, None, bits=4, group_size=32, g_idx=torch.zeros(64, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        QuantLinear.from_codes(codes, scales, None, None, bits=4, group_size=32, g_idx=torch.zeros(63, dtype=torch.int32))
    layer = QuantLinear(64, 4, bits=4, group_size=32, act_order=True)
    state = layer.state_dict()
    state["perm"] = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(ValueError, match="permutation"):
        layer.load_state_dict(state)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_torch_unpack_used_on_cuda_matches_the_cpu_kernel(bits):
    from quantcore._torch_kernels import unpack_torch

    g = torch.Generator().manual_seed(bits)
    for word_bits in (8, 32):
        cols = 96 if (96 * bits) % word_bits == 0 else 256
        codes = torch.randint(0, 2**bits, (7, cols), generator=g, dtype=torch.uint8)
        packed = quantcore.ops.pack(codes, bits, word_bits)
        assert torch.equal(unpack_torch(packed, bits, False), codes)
        assert torch.equal(unpack_torch(packed, bits, True), quantcore.ops.unpack(packed, bits, signed=True))
