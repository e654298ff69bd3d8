"""Each op against a pure-PyTorch reference; opcheck; meta tensors; bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import quantcore
from quantcore import ops

# ----------------------------------------------------------------- references


def pack_ref(codes: torch.Tensor, bits: int, word_bits: int) -> torch.Tensor:
    """Little-endian bit stream per row, built one bit at a time."""
    rows, cols = codes.shape
    v = codes.to(torch.int64) & ((1 << bits) - 1)
    bit_idx = torch.arange(bits)
    bits_stream = ((v.unsqueeze(-1) >> bit_idx) & 1).reshape(rows, cols * bits)
    words = bits_stream.reshape(rows, -1, word_bits)
    weights = (1 << torch.arange(word_bits, dtype=torch.int64))
    out = (words * weights).sum(-1)
    if word_bits == 8:
        return out.to(torch.uint8)
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def rtn_ref(w: torch.Tensor, bits: int, gs: int, sym: bool, scale_dtype=torch.float32):
    n, k = w.shape
    maxq = 2**bits - 1
    wg = w.float().reshape(n, k // gs, gs)
    if sym:
        amax = wg.abs().amax(-1)
        s = torch.where(amax > 0, 2 * amax / maxq, torch.ones_like(amax))
    else:
        lo = wg.amin(-1).clamp(max=0)
        hi = wg.amax(-1).clamp(min=0)
        s = torch.where(hi > lo, (hi - lo) / maxq, torch.ones_like(hi))
    s = s.to(scale_dtype).float()
    z = torch.full_like(s, (maxq + 1) // 2) if sym else torch.round(-lo / s).clamp(0, maxq)
    q = torch.clamp(torch.round(wg / s.unsqueeze(-1)) + z.unsqueeze(-1), 0, maxq)
    return q.reshape(n, k).to(torch.uint8), s, z.to(torch.uint8)


def qlinear_ref(x, qweight, scales, zeros, bias, bits, gs):
    w = ops.dequantize(qweight, scales.float(), zeros, bits, gs, torch.float64)
    y = x.double() @ w.t()
    if bias is not None:
        y = y + bias.double()
    return y


# ---------------------------------------------------------------------- pack


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("word_bits", [8, 32])
@pytest.mark.parametrize("signed", [False, True])
def test_pack_matches_reference_and_round_trips(bits, word_bits, signed):
    g = torch.Generator().manual_seed(bits * 10 + word_bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = torch.randint(lo, hi + 1, (3, 5, 64), generator=g, dtype=torch.int16)
    codes[0, 0, :2] = torch.tensor([lo, hi])
    codes = codes.to(torch.int8 if signed else torch.uint8)
    packed = ops.pack(codes, bits, word_bits)
    assert packed.dtype == (torch.uint8 if word_bits == 8 else torch.int32)
    assert packed.shape == (3, 5, 64 * bits // word_bits)
    assert torch.equal(packed.reshape(15, -1), pack_ref(codes.reshape(15, 64), bits, word_bits))
    assert torch.equal(ops.unpack(packed, bits, signed=signed), codes)


def test_pack_bad_inputs():
    with pytest.raises(ValueError, match="does not fit"):
        ops.pack(torch.tensor([[16, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="does not fit"):
        ops.pack(torch.tensor([[-9, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.pack(torch.zeros(2, 6, dtype=torch.uint8), 4)
    with pytest.raises(TypeError, match="uint8"):
        ops.pack(torch.zeros(2, 8, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="bits"):
        ops.pack(torch.zeros(2, 8, dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match="contiguous"):
        ops.pack(torch.zeros(8, 8, dtype=torch.uint8).t(), 4)
    with pytest.raises(ValueError, match="non-empty"):
        ops.pack(torch.zeros(0, 8, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="whole number"):
        ops.unpack(torch.zeros(2, 1, dtype=torch.int32), 3)
    with pytest.raises(TypeError):
        ops.pack([1, 2, 3], 4)


# ----------------------------------------------------------------------- rtn


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("gs", [32, 64, 128, 256, -1])
@pytest.mark.parametrize("sym", [True, False])
def test_rtn_matches_reference_exactly(bits, gs, sym):
    g = torch.Generator().manual_seed(bits + gs)
    w = torch.randn(24, 256, generator=g) * 0.05
    w[3, 7] = 0.9  # outlier
    codes, scales, zeros = ops.rtn_quantize(w, bits, gs, sym, scale_dtype=torch.float32)
    rc, rs, rz = rtn_ref(w, bits, 256 if gs == -1 else gs, sym)
    assert torch.equal(scales, rs)
    assert torch.equal(zeros, rz)
    assert torch.equal(codes, rc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rtn_dtypes_and_error_bound(dtype, scale_dtype):
    w = (torch.randn(16, 128) * 0.1).to(dtype)
    w_before = w.clone()
    codes, scales, zeros = ops.rtn_quantize(w, 4, 32, False, scale_dtype=scale_dtype)
    assert torch.equal(w, w_before), "input modified"
    assert scales.dtype == scale_dtype and zeros.dtype == torch.uint8 and codes.dtype == torch.uint8
    dq = ops.dequantize(ops.pack(codes, 4), scales, zeros, 4, 32)
    s = scales.float().repeat_interleave(32, dim=1)
    lo = (0 - zeros.float()).repeat_interleave(32, dim=1) * s
    hi = (15 - zeros.float()).repeat_interleave(32, dim=1) * s
    inside = (w.float() >= lo) & (w.float() <= hi)
    err = (dq - w.float()).abs()
    assert bool((err[inside] <= s[inside] / 2 + w.float().abs()[inside] * 1e-6).all())
    assert inside.float().mean() > 0.95


def test_rtn_per_tensor_and_per_channel():
    w = torch.randn(8, 64)
    c, s, z = ops.rtn_quantize(w, 8, ops.PER_TENSOR, True, scale_dtype=torch.float32)
    assert s.shape == (1, 1) and float(s) == pytest.approx(2 * float(w.abs().max()) / 255, rel=1e-6)
    c, s, z = ops.rtn_quantize(w, 8, ops.PER_CHANNEL, True, scale_dtype=torch.float32)
    assert s.shape == (8, 1)


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_mse_clip_lowers_error(sym, bits):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 512, generator=g) * 0.02
    w[torch.arange(64), torch.arange(64) * 7] = 0.2  # one outlier per row
    def err(mse):
        c, s, z = ops.rtn_quantize(w, bits, 128, sym, mse_clip=mse, scale_dtype=torch.float32)
        return float(((ops.dequantize(ops.pack(c, bits), s, z, bits, 128) - w) ** 2).sum())
    plain, clipped = err(False), err(True)
    assert clipped < 0.95 * plain


def test_rtn_bad_inputs():
    with pytest.raises(ValueError, match="NaN or Inf"):
        ops.rtn_quantize(torch.tensor([[1.0, float("nan")] * 16]), 4, 32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        ops.rtn_quantize(torch.tensor([[1.0, float("inf")] * 16]), 4, 32)
    with pytest.raises(ValueError, match="does not divide"):
        ops.rtn_quantize(torch.randn(4, 96), 4, 64)
    with pytest.raises(ValueError, match="bits"):
        ops.rtn_quantize(torch.randn(4, 64), 1, 32)
    with pytest.raises(ValueError, match="bits"):
        ops.rtn_quantize(torch.randn(4, 64), 9, 32)
    with pytest.raises(ValueError, match="empty"):
        ops.rtn_quantize(torch.randn(0, 64), 4, 32)
    with pytest.raises(ValueError, match="2-D"):
        ops.rtn_quantize(torch.randn(64), 4, 32)
    with pytest.raises(TypeError, match="float"):
        ops.rtn_quantize(torch.randint(0, 4, (4, 64)), 4, 32)
    with pytest.raises(ValueError, match="contiguous"):
        ops.rtn_quantize(torch.randn(64, 64).t(), 4, 32)
    with pytest.raises(ValueError, match="overflows"):
        ops.rtn_quantize(torch.full((2, 32), 1e6), 4, 32, scale_dtype=torch.float16)
    with pytest.raises(TypeError, match="scale_dtype"):
        ops.rtn_quantize(torch.randn(4, 64), 4, 32, scale_dtype=torch.int8)


# ------------------------------------------------------------------- qlinear

SHAPES = [  # (M, N, K, group)
    (1, 64, 128, 128), (1, 33, 96, 32), (2, 17, 256, 64), (3, 50, 64, -1), (5, 24, 160, 32),
    (8, 48, 512, 128), (9, 70, 320, 64), (13, 16, 1088, 64), (33, 40, 256, 256),
]


def make_qweight(n, k, bits, gs, sym, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    codes, s, z = ops.rtn_quantize(w, bits, gs, sym, scale_dtype=torch.float16)
    return ops.pack(codes, bits), s, (None if sym else z)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_qlinear_matches_reference(cpu_isa, bits, sym, shape):
    m, n, k, gs = shape
    qw, s, z = make_qweight(n, k, bits, gs, sym, seed=m + n)
    bias = torch.randn(n)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=g)
    scale = (x.double().abs() @ ops.dequantize(qw, s, z, bits, gs, torch.float64).abs().t()) + 1
    for dtype, rtol in ((torch.float32, 3e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        xd = x.to(dtype)
        ref_d = qlinear_ref(xd.float(), qw, s, z, bias, bits, gs)
        y = ops.qlinear(xd, qw, s, z, bias, bits, gs)
        assert y.dtype == dtype and y.shape == (m, n)
        err = (y.double() - ref_d).abs()
        tol = rtol * (ref_d.abs() + scale * (1e-6 if dtype == torch.float32 else 0))
        assert bool((err <= tol + 3e-6 * scale).all()), (dtype, float((err / (ref_d.abs() + 1e-9)).max()))


@pytest.mark.parametrize("path", ["rows_f32", "rows_bf16", "tiles_bf16", "dequant_mm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_forced_path_matches(path, dtype):
    if path in ("rows_bf16", "tiles_bf16") and "avx512_bf16" not in quantcore._C.supported_cpu_isas():
        pytest.skip("needs AVX512_BF16")
    quantcore._C.force_qgemm_path(path)
    try:
        for bits in (4, 8):
            for m in (1, 11, 40):
                qw, s, z = make_qweight(40, 192, bits, 64, False, seed=m)
                x = torch.randn(m, 192).to(dtype)
                bias = torch.randn(40)
                y = ops.qlinear(x, qw, s, z, bias, bits, 64)
                ref = qlinear_ref(x.float(), qw, s, z, bias, bits, 64)
                rtol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
                assert y.dtype == dtype
                assert torch.allclose(y.double(), ref, rtol=rtol, atol=1e-4), (path, dtype, bits, m)
    finally:
        quantcore._C.force_qgemm_path("auto")
    with pytest.raises(ValueError, match="unknown qgemm path"):
        quantcore._C.force_qgemm_path("fastest")


def test_qgemm_path_reports_the_route_qlinear_takes():
    path = quantcore._C.qgemm_path
    assert path(64, 4096, 4, 128, "float32") == "dequant_mm"  # dense GEMM from 32 rows on, fp32/fp16
    assert path(64, 4096, 4, 128, "bfloat16") != "dequant_mm"  # bf16 always stays on the fused kernels
    assert path(1, 4096, 4, 128, "float32") != "dequant_mm"
    quantcore._C.force_qgemm_path("rows_f32")
    try:
        assert path(64, 4096, 4, 128, "float32") == "rows_f32"
    finally:
        quantcore._C.force_qgemm_path("auto")
    with pytest.raises(ValueError, match="x_dtype"):
        path(1, 4096, 4, 128, "int8")


def test_qlinear_batched_leading_dims_and_empty_batch():
    qw, s, z = make_qweight(32, 64, 4, 32, True)
    x = torch.randn(2, 3, 64)
    y = ops.qlinear(x, qw, s, None, None, 4, 32)
    assert y.shape == (2, 3, 32)
    assert torch.allclose(y, F.linear(x, ops.dequantize(qw, s, None, 4, 32)), atol=1e-5)
    assert ops.qlinear(torch.randn(0, 64), qw, s, None, None, 4, 32).shape == (0, 32)


def test_qlinear_bad_inputs():
    qw, s, z = make_qweight(32, 64, 4, 32, False)
    x = torch.randn(3, 64)
    with pytest.raises(ValueError, match="input features"):
        ops.qlinear(torch.randn(3, 60), qw, s, z, None, 4, 32)
    with pytest.raises(ValueError, match="contiguous"):
        ops.qlinear(torch.randn(64, 3).t(), qw, s, z, None, 4, 32)
    with pytest.raises(TypeError, match="float"):
        ops.qlinear(x.to(torch.int32), qw, s, z, None, 4, 32)
    with pytest.raises(TypeError, match="int32"):
        ops.qlinear(x, qw.to(torch.int64), s, z, None, 4, 32)
    with pytest.raises(ValueError, match="scales must be"):
        ops.qlinear(x, qw, s[:, :1], z, None, 4, 32)
    with pytest.raises(ValueError, match="zeros must be"):
        ops.qlinear(x, qw, s, z[:1], None, 4, 32)
    with pytest.raises(ValueError, match="bias"):
        ops.qlinear(x, qw, s, z, torch.randn(5), 4, 32)
    with pytest.raises(ValueError, match="bits"):
        ops.qlinear(x, qw, s, z, None, 3, 32)
    with pytest.raises(ValueError, match="group_size"):
        ops.qlinear(x, qw, s, z, None, 4, 48)


# ------------------------------------------------- opcheck, meta, torch.compile


def _opcheck_samples():
    qw, s, z = make_qweight(32, 64, 4, 32, False)
    return [
        (torch.ops.quantcore.pack.default, (torch.randint(0, 16, (4, 16), dtype=torch.uint8), 4, 32)),
        (torch.ops.quantcore.pack.default, (torch.randint(-4, 4, (4, 32), dtype=torch.int8), 3, 32)),
        (torch.ops.quantcore.unpack.default, (torch.randint(0, 2**31 - 1, (4, 3), dtype=torch.int32), 3, True)),
        (torch.ops.quantcore.rtn_quantize.default,
         (torch.randn(8, 64), 4, 32, True, False, 100, 0.8, torch.float16)),
        (torch.ops.quantcore.rtn_quantize.default,
         (torch.randn(8, 64), 8, 0, False, True, 20, 0.5, torch.float32)),
        (torch.ops.quantcore.qlinear.default, (torch.randn(3, 64), qw, s, z, torch.randn(32), 4, 32)),
        (torch.ops.quantcore.qlinear.default, (torch.randn(2, 5, 64).bfloat16(), qw, s, None, None, 4, 32)),
    ]


@pytest.mark.parametrize("idx", range(7))
def test_opcheck(idx):
    op, args = _opcheck_samples()[idx]
    torch.library.opcheck(op, args)


def test_meta_tensors():
    qw = torch.empty(32, 8, dtype=torch.int32, device="meta")
    s = torch.empty(32, 2, dtype=torch.float16, device="meta")
    y = torch.ops.quantcore.qlinear(torch.empty(4, 64, device="meta"), qw, s, None, None, 4, 32)
    assert y.shape == (4, 32) and y.device.type == "meta"
    c, sc, z = torch.ops.quantcore.rtn_quantize(torch.empty(8, 64, device="meta"), 4, 32, True, False,
                                                100, 0.8, torch.float16)
    assert c.shape == (8, 64) and sc.shape == (8, 2) and sc.dtype == torch.float16


def test_torch_compile_of_quantlinear():
    lin = torch.nn.Linear(64, 32)
    q = quantcore.QuantLinear.from_linear(lin, quantcore.RTNConfig(bits=4, group_size=32))
    x = torch.randn(3, 64)
    compiled = torch.compile(q, fullgraph=True)
    assert torch.allclose(compiled(x), q(x))
