"""Per-token activation fake quantization (quantcore.fake_quantize_per_token,
cpp/kernels/act_fake_quant.cpp and its CUDA kernel) and QAT with
activation="int8_per_token": forward against RTN, straight-through gradient,
NaN rows, prepare -> convert -> save/load equivalence, bad inputs."""

from __future__ import annotations

import pytest
import torch

import quantcore
from quantcore import QuantLinear, qat
from quantcore._torch_kernels import fake_quantize_per_token_torch

from conftest import make_tiny

CUDA = torch.cuda.is_available() and quantcore._C.cuda_kernels


def rtn_per_token(x, bits, sym):
    """RTN per row (group = the row, fp32 scales), dequantized."""
    x2 = x.float().reshape(-1, x.shape[-1])
    codes, scales, zeros = quantcore.ops.rtn_quantize(x2, bits, -1, sym, scale_dtype=torch.float32)
    z = torch.full_like(scales, float(1 << (bits - 1))) if sym else zeros.float()
    return ((codes.float() - z) * scales).to(x.dtype).view(x.shape)


@pytest.mark.parametrize("shape", [(3, 5, 64), (1, 7), (4, 200)])
@pytest.mark.parametrize("bits,sym", [(8, True), (8, False), (4, True), (4, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_token_forward_equals_rtn_per_row(shape, bits, sym, dtype):
    x = (torch.randn(*shape, generator=torch.Generator().manual_seed(bits)) * 3 + (0 if sym else 1)).to(dtype)
    x.view(-1, shape[-1])[0] = 0  # an all-zero row is legal
    got = qat.fake_quantize_per_token(x, bits, sym)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, rtn_per_token(x, bits, sym))
    assert torch.equal(fake_quantize_per_token_torch(x, bits, sym), got)  # the tensor-op fallback


def test_per_token_gradient_is_straight_through_and_nan_rows_stay_nan():
    x = torch.randn(4, 32, requires_grad=True)
    up = torch.randn(4, 32)
    (qat.fake_quantize_per_token(x) * up).sum().backward()
    assert torch.equal(x.grad, up)
    bad = torch.randn(3, 8)
    bad[1, 2] = float("inf")
    bad[2, 0] = float("nan")
    y = qat.fake_quantize_per_token(bad)
    assert torch.isfinite(y[0]).all() and torch.isnan(y[1:]).all()
    assert torch.equal(y[0], qat.fake_quantize_per_token(bad[:1])[0])


def test_opcheck_and_compile_of_the_per_token_op():
    x = torch.randn(6, 64, requires_grad=True)
    torch.library.opcheck(torch.ops.quantcore.fake_quantize_per_token.default, (x, 8, True))
    torch.library.opcheck(torch.ops.quantcore.fake_quantize_per_token.default, (torch.randn(2, 3, 16), 4, False))
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=32, activation="int8_per_token"))
    eager = model(x)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.square().mean().backward()
    assert model[0].weight_scale.grad is not None


def test_per_token_bad_inputs_raise_clearly():
    with pytest.raises(TypeError, match="float"):
        qat.fake_quantize_per_token(torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="bits"):
        qat.fake_quantize_per_token(torch.ones(2, 4), bits=9)
    with pytest.raises(ValueError, match="features"):
        qat.fake_quantize_per_token(torch.ones(2, 0))
    with pytest.raises(ValueError, match="features"):
        qat.fake_quantize_per_token(torch.tensor(1.0))
    with pytest.raises(ValueError, match="activation"):
        qat.QATConfig(activation="int9_per_token")
    with pytest.raises(ValueError, match="activation"):
        qat.QATConfig(activation="fp8")
    with pytest.raises(ValueError, match="act_bits"):
        QuantLinear(32, 8, bits=4, group_size=32, act_bits=1)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("activation", ["int8_per_token", "int8_per_token_asym"])
def test_activation_qat_trains_converts_and_round_trips(name, activation, tmp_path):
    model = make_tiny(name)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    names = qat.prepare_(model, qat.QATConfig(bits=4, group_size=32, activation=activation))
    layer = model.get_submodule(names[0])
    x = torch.randn(2, 5, layer.in_features)
    sym = not activation.endswith("asym")
    want = torch.nn.functional.linear(qat.fake_quantize_per_token(x, 8, sym), layer.quantized_weight(), layer.bias)
    torch.testing.assert_close(layer(x), want, rtol=0, atol=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(3):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fake = model(ids).logits
    qat.convert_(model)
    q = model.get_submodule(names[0])
    assert isinstance(q, QuantLinear) and q.act_bits == 8 and q.act_sym == sym
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, fake, rtol=1e-3, atol=1e-3)
        loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q"))
        assert loaded.get_submodule(names[0]).act_bits == 8
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a build with QUANTCORE_ENABLE_CUDA=ON")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cols,sym", [(64, True), (200, False), (4096, True)])
def test_cuda_per_token_matches_the_cpu_kernel(dtype, cols, sym):
    x = (torch.randn(37, cols, generator=torch.Generator().manual_seed(cols)) * 2 + (0 if sym else 1)).to(dtype)
    x[3] = 0
    x[5, 7] = float("nan")
    got = qat.fake_quantize_per_token(x.cuda(), 8, sym).cpu()
    want = qat.fake_quantize_per_token(x, 8, sym)
    assert got.dtype == dtype
    assert torch.equal(torch.nan_to_num(got, nan=123.0), torch.nan_to_num(want, nan=123.0))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a build with QUANTCORE_ENABLE_CUDA=ON")
def test_cuda_activation_qat_converts_to_the_same_outputs():
    model = make_tiny("llama").cuda().to(torch.bfloat16)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0)).cuda()
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=32, activation="int8_per_token"))
    model(ids, labels=ids).loss.backward()
    with torch.no_grad():
        fake = model(ids).logits.float()
        qat.convert_(model)
        torch.testing.assert_close(model(ids).logits.float(), fake, rtol=2e-2, atol=2e-2)
