"""ggml block types (GGUF): our C++ quantizers and dequantizers against gguf-py
(the `gguf` package, llama.cpp's own Python library) and against bytes that
ggml's C reference quantizer produced (tests/data/ggml_reference_blocks.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402

import quantcore  # noqa: E402,F401  (registers the ops)

LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
REFERENCE = Path(__file__).resolve().parents[1] / "data" / "ggml_reference_blocks.npz"


def quantize(x, t, importance=None):
    imp = None if importance is None else torch.as_tensor(importance)
    return torch.ops.quantcore.gguf_quantize(torch.as_tensor(x), int(t), imp).numpy()


def dequantize(b, t, n):
    return torch.ops.quantcore.gguf_dequantize(torch.as_tensor(b), int(t), n).numpy()


def awkward_rows(rows=16, n=512, seed=0):
    g = np.random.default_rng(seed)
    x = (g.standard_normal((rows, n)) * g.uniform(1e-3, 5, (rows, 1))).astype(np.float32)
    x[0, :64] = 0                                       # all-zero blocks
    x[1, :256] = 0.25                                   # constant blocks
    x[2] = np.abs(x[2])                                 # one sign only
    x[3, :32] = np.linspace(-1, 1, 32)                  # exact .5 ties on the grid
    x[4, 5], x[4, 6] = -7, 7                            # +max and -max tie
    x[5] = g.standard_t(2, n)                           # heavy tails
    x[6, :32] = 1e-30                                   # below fp16's range
    return x


@pytest.mark.parametrize("t", LEGACY)
def test_legacy_quantizers_are_bit_exact_with_gguf_py(t):
    x = awkward_rows()
    assert np.array_equal(quantize(x, t), gguf.quants.quantize(x, t))


@pytest.mark.parametrize("t", LEGACY + KQUANTS)
def test_dequantization_equals_gguf_py_bit_for_bit(t):
    x = awkward_rows()
    ours = quantize(x, t)
    # Our bytes, and arbitrary bytes (every field value, including fp16 inf/nan scales).
    random_bytes = np.random.default_rng(1).integers(0, 256, ours.shape, dtype=np.uint8)
    for b in (ours, random_bytes):
        with np.errstate(invalid="ignore", over="ignore"):
            ref = gguf.quants.dequantize(b, t).astype(np.float32)
        assert np.array_equal(dequantize(b, t, x.shape[1]).view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("t", LEGACY + KQUANTS)
@pytest.mark.parametrize("weighted", [False, True])
def test_quantizers_reproduce_ggml_reference_bytes(t, weighted):
    # Produced by ggml-quants.c (ggml-org/ggml d99724f2, gcc -O2, x86-64): quantize_<type>
    # with and without an importance matrix. Our code is written from the algorithm,
    # not taken from it; the bytes must still agree.
    ref = np.load(REFERENCE)
    got = quantize(ref["x"], t, ref["importance"] if weighted else None)
    assert np.array_equal(got, ref[f"{t.name}_{'imatrix' if weighted else 'plain'}"])


# Relative RMS error on Gaussian weights: ggml's types land near these (upper bounds).
ERROR_BOUND = {T.Q8_0: 0.006, T.Q6_K: 0.02, T.Q5_1: 0.04, T.Q5_K: 0.04, T.Q5_0: 0.045, T.Q4_1: 0.08,
               T.Q4_K: 0.075, T.Q4_0: 0.09, T.Q3_K: 0.16, T.Q2_K: 0.31}


@pytest.mark.parametrize("t", LEGACY + KQUANTS)
def test_error_bounds_and_importance_weighting(t):
    g = np.random.default_rng(3)
    x = g.standard_normal((32, 1024)).astype(np.float32)
    b = quantize(x, t)
    assert b.dtype == np.uint8 and b.shape == (32, 1024 // gguf.GGML_QUANT_SIZES[t][0] * gguf.GGML_QUANT_SIZES[t][1])
    rel = float(np.sqrt(((dequantize(b, t, 1024) - x) ** 2).mean() / (x ** 2).mean()))
    assert rel < ERROR_BOUND[t], rel
    if t == T.Q8_0:
        return  # llama.cpp ignores the importance matrix for Q8_0, as we do
    imp = g.uniform(0.01, 10, 1024).astype(np.float32) ** 2
    weighted = lambda bb: float((imp * (dequantize(bb, t, 1024) - x) ** 2).sum())
    assert weighted(quantize(x, t, imp)) < weighted(b)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(4, 256)
    with pytest.raises(ValueError, match="not one of the supported"):
        torch.ops.quantcore.gguf_quantize(x, 5)
    with pytest.raises(ValueError, match="not one of the supported"):
        torch.ops.quantcore.gguf_quantize(x, int(T.F16))  # pass-through types are not block-quantized
    with pytest.raises(ValueError, match="multiple of 256"):
        torch.ops.quantcore.gguf_quantize(torch.randn(4, 96), int(T.Q4_K))
    bad = x.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        torch.ops.quantcore.gguf_quantize(bad, int(T.Q8_0))
    with pytest.raises(ValueError, match="importance"):
        torch.ops.quantcore.gguf_quantize(x, int(T.Q4_K), torch.ones(128))
    with pytest.raises(ValueError, match="importance"):
        torch.ops.quantcore.gguf_quantize(x, int(T.Q4_K), -torch.ones(256))
    with pytest.raises(ValueError, match="2-D"):
        torch.ops.quantcore.gguf_quantize(torch.randn(256), int(T.Q8_0))
    with pytest.raises(TypeError):
        torch.ops.quantcore.gguf_quantize(torch.ones(4, 256, dtype=torch.int32), int(T.Q8_0))
    b = torch.ops.quantcore.gguf_quantize(x, int(T.Q4_K))
    with pytest.raises(ValueError, match="bytes"):
        torch.ops.quantcore.gguf_dequantize(b[:, :-1], int(T.Q4_K), 256)
    with pytest.raises(TypeError):
        torch.ops.quantcore.gguf_dequantize(b.to(torch.int32), int(T.Q4_K), 256)
    with pytest.raises(ValueError, match="multiple"):
        torch.ops.quantcore.gguf_dequantize(b, int(T.Q4_K), 200)


def test_inputs_untouched_any_float_dtype_and_opcheck():
    x = torch.randn(6, 512)
    x0 = x.clone()
    b32 = torch.ops.quantcore.gguf_quantize(x, int(T.Q4_K))
    assert torch.equal(x, x0)
    b16 = torch.ops.quantcore.gguf_quantize(x.to(torch.bfloat16), int(T.Q4_K))
    assert torch.equal(b16, torch.ops.quantcore.gguf_quantize(x.to(torch.bfloat16).float(), int(T.Q4_K)))
    assert b32.shape == b16.shape
    torch.library.opcheck(torch.ops.quantcore.gguf_quantize.default, (x, int(T.Q5_K), torch.rand(512)))
    torch.library.opcheck(torch.ops.quantcore.gguf_dequantize.default, (b32, int(T.Q4_K), 512))
