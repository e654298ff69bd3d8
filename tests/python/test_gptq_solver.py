"""The C++ GPTQ solver against a straightforward PyTorch transcription of the
reference algorithm (gptq_reference.py)."""

from __future__ import annotations

import pytest
import torch

from quantcore import ops

from gptq_reference import gptq_ref


def correlated_problem(rows, cols, n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    X = torch.randn(n, cols, generator=g) @ mix
    X[:, 3] *= 8  # an outlier feature
    W = torch.randn(rows, cols, generator=g) * 0.05
    H = torch.zeros(cols, cols)
    seen = 0
    for chunk in X.split(100):
        seen = torch.ops.quantcore.gptq_hessian_update(H, chunk, seen)
    return W, H, X


def solve(W, H, bits, gs, sym, act_order=False, static_groups=False, block=128, scale_dtype=torch.float32,
          mse=False):
    return torch.ops.quantcore.gptq_quantize(W, H, bits, gs, sym, act_order, static_groups, 0.01, block, mse,
                                             scale_dtype)


def test_hessian_update_is_the_running_mean_of_2xtx():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 24, generator=g)
    H = torch.zeros(24, 24)
    seen = 0
    for chunk in X.split(70):
        seen = torch.ops.quantcore.gptq_hessian_update(H, chunk, seen)
    assert seen == 300
    assert torch.allclose(H, 2 / 300 * X.t() @ X, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        torch.ops.quantcore.gptq_hessian_update(H, torch.full((2, 24), float("nan")), seen)


@pytest.mark.parametrize("gs", [32, -1])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("act_order,static_groups", [(False, False), (True, False), (True, True), (False, True)])
@pytest.mark.parametrize("bits", [3, 4])
def test_codes_match_the_reference_exactly(gs, sym, act_order, static_groups, bits):
    W, H, _ = correlated_problem(16, 96, seed=bits)
    H[5, :] = 0  # a dead input column
    H[:, 5] = 0
    codes, scales, zeros, g_idx, info = solve(W, H, bits, gs, sym, act_order, static_groups, block=32)
    ref = gptq_ref(W, H, bits, gs, sym, act_order, static_groups, blocksize=32)
    assert torch.equal(codes, ref)
    assert float(info[1]) == 0  # no fallback needed
    # Codes, scales, zeros and g_idx describe the weight in RTN's form.
    groups = 1 if gs == -1 else 96 // gs
    assert scales.shape == (16, groups) and zeros.shape == (16, groups) and g_idx.shape == (96,)
    assert int(g_idx.max()) == groups - 1


def test_gptq_beats_rtn_on_correlated_inputs():
    W, H, X = correlated_problem(64, 256, n=2048, seed=1)
    for bits, gs in ((4, 64), (3, 64), (4, -1)):
        c, s, z = ops.rtn_quantize(W, bits, gs, False, scale_dtype=torch.float32)
        w_rtn = ops.dequantize(ops.pack(c, bits), s, z, bits, gs)
        codes, scales, zeros, g_idx, _ = solve(W, H, bits, gs, False, act_order=True)
        w_gptq = ((codes.float() - zeros.float()[:, g_idx.long()]) * scales.float()[:, g_idx.long()])
        err = lambda wq: float((X @ (W - wq).t()).norm())
        assert err(w_gptq) < 0.8 * err(w_rtn), (bits, gs, err(w_gptq), err(w_rtn))


def test_indefinite_hessian_falls_back_instead_of_failing():
    W, H, _ = correlated_problem(8, 32)
    bad = -torch.eye(32)  # negative definite: no damping within range helps
    codes, scales, zeros, g_idx, info = solve(W, bad, 4, 32, True)
    assert float(info[1]) in (1.0, 2.0)
    assert codes.shape == (8, 32)
    c_rtn, _, _ = ops.rtn_quantize(W, 4, 32, True, scale_dtype=torch.float32)
    if float(info[1]) == 2.0:
        assert torch.equal(codes, c_rtn)  # H^-1 = I is plain RTN


def test_bad_inputs_raise():
    W, H, _ = correlated_problem(8, 32)
    with pytest.raises(ValueError, match="NaN"):
        solve(torch.full_like(W, float("nan")), H, 4, 32, True)
    Hn = H.clone()
    Hn[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN"):
        solve(W, Hn, 4, 32, True)
    with pytest.raises(ValueError, match="hessian must be"):
        solve(W, H[:16, :16], 4, 32, True)
    with pytest.raises(ValueError, match="divide"):
        solve(W, H, 4, 24, True)
    with pytest.raises(ValueError, match="bits"):
        solve(W, H, 9, 32, True)
    with pytest.raises(TypeError, match="hessian"):
        solve(W, H.double(), 4, 32, True)


def test_opcheck_and_input_untouched():
    W, H, _ = correlated_problem(8, 64)
    W0, H0 = W.clone(), H.clone()
    torch.library.opcheck(torch.ops.quantcore.gptq_quantize.default,
                          (W, H, 4, 32, True, True, False, 0.01, 32, False, torch.float16),
                          test_utils=("test_schema", "test_faketensor"))
    assert torch.equal(W, W0) and torch.equal(H, H0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("gs,block", [(32, 32), (-1, 128), (64, 128), (32, 100)])
def test_cuda_solver_matches_the_reference_run_on_the_gpu(gs, block, act_order):
    # The CUDA block kernel (one warp per row) uses torch's unfused arithmetic:
    # the reference transcription run with CUDA tensors gives the same codes.
    W, H, _ = correlated_problem(200, 256, n=2048, seed=3)
    W, H = W.cuda(), H.cuda()
    codes, scales, zeros, g_idx, info = solve(W, H, 4, gs, False, act_order, block=block)
    ref = gptq_ref(W, H, 4, gs, False, act_order, blocksize=block)
    assert codes.is_cuda and float((codes == ref).float().mean()) >= 0.999
    cpu = solve(W.cpu(), H.cpu(), 4, gs, False, act_order, block=block)[0]
    assert float((codes.cpu() == cpu).float().mean()) >= 0.99
