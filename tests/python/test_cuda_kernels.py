"""CUDA kernels (cpp/kernels/cuda/): the quantized GEMV / dequantize-then-GEMM
behind quantcore.qlinear, against a float reference, for odd shapes, every
group size, sym/asym, act-order, both activation dtypes and all scale dtypes.
Runs on a GPU with a build made with QUANTCORE_ENABLE_CUDA=ON; skipped elsewhere."""

from __future__ import annotations

import pytest
import torch

import quantcore
from quantcore import QuantLinear, RTNConfig

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and quantcore._C.cuda_kernels),
                                reason="needs a CUDA GPU and a build with QUANTCORE_ENABLE_CUDA=ON")


def packed(n, k, bits, group, sym, scale_dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    codes, scales, zeros = quantcore.ops.rtn_quantize(w, bits=bits, group_size=group, symmetric=sym,
                                                      scale_dtype=scale_dtype)
    qweight = quantcore.ops.pack(codes, bits, 32)
    return qweight.cuda(), scales.cuda(), None if sym else zeros.cuda()


def reference(x, qweight, scales, zeros, bias, bits, group):
    w = quantcore.ops.dequantize(qweight.cpu(), scales.cpu().float(), zeros.cpu() if zeros is not None else None,
                                 bits, group, torch.float64)
    y = x.cpu().double() @ w.T
    return y + bias.cpu().double() if bias is not None else y


def check(y, expected, dtype):
    err = float((y.cpu().double() - expected).norm() / expected.norm())
    assert err < (4e-3 if dtype == torch.float16 else 1.5e-2), err


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group,sym", [(32, True), (64, False), (128, True), (128, False), (-1, True)])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 9, 33])
def test_qlinear_matches_the_reference(bits, dtype, group, sym, m):
    n, k = 200, 640  # N not a multiple of the CTA's rows; K = 20 lane-chunks
    gs = k if group == -1 else group
    qweight, scales, zeros = packed(n, k, bits, gs, sym, torch.float16, seed=m)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    y = torch.ops.quantcore.qlinear(x, qweight, scales, zeros, bias, bits, gs)
    assert y.dtype == dtype and y.shape == (m, n)
    check(y, reference(x, qweight, scales, zeros, bias, bits, gs), dtype)


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits", [4, 8])
def test_qlinear_reads_every_scale_dtype(scale_dtype, bits):
    qweight, scales, zeros = packed(64, 4160, bits, 64, False, scale_dtype)  # K = 65 x 64
    x = torch.randn(1, 4160, dtype=torch.bfloat16, device="cuda")
    y = torch.ops.quantcore.qlinear(x, qweight, scales, zeros, None, bits, 64)
    check(y, reference(x, qweight, scales, zeros, None, bits, 64), torch.bfloat16)


def test_dequantize_kernel_equals_the_torch_dequantization():
    for bits in (2, 4, 8):
        qweight, scales, zeros = packed(40, 256, bits, 32, False, torch.float16)
        got = torch.ops.quantcore.dequantize_packed(qweight, scales, zeros, bits, 32, torch.float32)
        want = quantcore.ops.dequantize(qweight.cpu(), scales.cpu(), zeros.cpu(), bits, 32)
        assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quant_linear_on_cuda_uses_the_kernels_with_act_order_and_input_scale(dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 96)
    q = quantcore.QuantLinear.from_codes(
        *[t for t in quantcore.ops.rtn_quantize(lin.weight.detach(), bits=4, group_size=64)[:2]], None,
        lin.bias.detach(), bits=4, group_size=64, g_idx=torch.randperm(256) // 64,
        input_scale=torch.rand(256) + 0.5)
    x = torch.randn(3, 5, 256)
    expected = torch.nn.functional.linear(x.double(), q.dequantize(torch.float64), q.bias.double())
    q = q.cuda()
    y = q(x.to("cuda", dtype))
    assert y.shape == (3, 5, 96) and y.dtype == dtype
    err = float((y.cpu().double() - expected).norm() / expected.norm())
    assert err < (4e-3 if dtype == torch.float16 else 1.5e-2)


def test_qlinear_cuda_refuses_bad_inputs():
    qweight, scales, zeros = packed(64, 256, 4, 64, True, torch.float16)
    x = torch.randn(2, 256, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="x must be"):
        torch.ops.quantcore.qlinear(x[:, :128].contiguous(), qweight, scales, None, None, 4, 64)
    with pytest.raises(ValueError, match="scales must be"):
        torch.ops.quantcore.qlinear(x, qweight, scales[:, :2].contiguous(), None, None, 4, 64)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        torch.ops.quantcore.qlinear(x, qweight, scales, None, None, 3, 64)
    with pytest.raises(ValueError, match="CUDA"):
        torch.ops.quantcore.qlinear(x, qweight, scales.cpu(), None, None, 4, 64)


def test_torch_compile_of_a_quantized_model_on_cuda():
    from conftest import make_tiny

    model = make_tiny("llama", dtype=torch.bfloat16)
    quantcore.quantize_(model, RTNConfig(bits=4, group_size=32), progress=False)
    model.cuda()
    ids = torch.randint(0, 256, (1, 16), device="cuda")
    with torch.no_grad():
        eager = model(ids).logits
        compiled = torch.compile(model)(ids).logits
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)
    assert any(isinstance(m, QuantLinear) for m in model.modules())
