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


def textbook_factor(H, damp):
    """GPTQ reference's route: cholesky, cholesky_inverse, cholesky(upper), in float64."""
    Hd = H.double() + damp * torch.eye(H.shape[0], dtype=torch.float64)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)


@pytest.mark.parametrize("n,block", [(1, 256), (7, 3), (96, 256), (255, 64), (257, 64), (600, 128), (300, 1)])
def test_in_place_inverse_factor_equals_the_textbook_route(n, block):
    # Odd sizes against the panel width: partial last panels, a middle panel
    # mirrored onto itself, a single panel, panels of one column.
    g = torch.Generator().manual_seed(n)
    X = torch.randn(2 * n + 8, n, generator=g) @ (torch.randn(n, n, generator=g) / n**0.5 + torch.eye(n))
    H = 2 / X.shape[0] * X.t() @ X
    U = torch.ops.quantcore.gptq_inverse_factor(H, 0.01 * float(H.diagonal().mean()), block)
    ref = textbook_factor(H, 0.01 * float(H.diagonal().mean()))
    assert U.shape == (n, n) and U.is_contiguous()
    assert torch.equal(U.tril(-1), torch.zeros_like(U.tril(-1)))
    assert (U.diagonal() > 0).all()
    assert torch.allclose(U.double(), ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
    # The factor defines the damped inverse: U^T U (H + damp I) = I.
    Hd = H.double() + 0.01 * float(H.diagonal().mean()) * torch.eye(n, dtype=torch.float64)
    assert torch.allclose(U.double().t() @ U.double() @ Hd, torch.eye(n, dtype=torch.float64), atol=2e-3)


def test_inverse_factor_leaves_its_input_and_rejects_bad_hessians():
    _, H, _ = correlated_problem(4, 40)
    before = H.clone()
    torch.ops.quantcore.gptq_inverse_factor(H, 0.0, 16)
    assert torch.equal(H, before)
    indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="not positive definite"):
        torch.ops.quantcore.gptq_inverse_factor(indefinite, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        torch.ops.quantcore.gptq_inverse_factor(torch.full((3, 3), float("nan")), 0.0)
    with pytest.raises(ValueError, match="square"):
        torch.ops.quantcore.gptq_inverse_factor(torch.ones(3, 4), 0.0)
    with pytest.raises(TypeError):
        torch.ops.quantcore.gptq_inverse_factor(H.double(), 0.0)
    torch.library.opcheck(torch.ops.quantcore.gptq_inverse_factor.default, (H, 0.1, 16))


def test_wide_layer_codes_agree_with_the_reference():
    # Several factor panels (cols > 256): the in-place factor and the textbook
    # one differ only by rounding, so codes agree almost everywhere.
    W, H, _ = correlated_problem(32, 640, n=1400, seed=3)
    for act_order in (False, True):
        codes, *_ = solve(W, H, 4, 128, True, act_order)
        ref = gptq_ref(W, H, 4, 128, True, act_order, False)
        assert (codes == ref).float().mean() > 0.995


@pytest.mark.parametrize("act_order,static_groups", [(False, False), (True, False), (True, True)])
def test_solver_works_in_the_callers_hessian_and_gives_it_back_bit_exact(act_order, static_groups):
    # A contiguous, exactly symmetric float32 H is permuted and factored in place
    # (no second n x n matrix) and restored; any other H is copied. Both give
    # the same codes, and neither caller's matrix changes.
    W, H, _ = correlated_problem(24, 640, n=1400, seed=5)
    H[7, :] = 0  # a dead input
    H[:, 7] = 0
    assert torch.equal(H, H.t())
    H0 = H.clone()
    in_place = solve(W, H, 4, 64, False, act_order, static_groups)
    assert torch.equal(H, H0)
    strided = H0.t()  # same values, not contiguous: the copying path
    assert not strided.is_contiguous()
    copied = solve(W, strided, 4, 64, False, act_order, static_groups)
    assert torch.equal(strided, H0)
    for a, b in zip(in_place[:4], copied[:4]):
        assert torch.equal(a, b)


def test_retries_and_fallbacks_give_the_hessian_back():
    W, H, X = correlated_problem(8, 300, n=40, seed=2)  # rank 40 < 300 columns
    # Slightly indefinite: the first damping fails, a larger one succeeds.
    shift = 0.015 * float(H.diagonal().mean())
    needs_damping = H - shift * torch.eye(300)
    needs_damping = (needs_damping + needs_damping.t()) / 2
    before = needs_damping.clone()
    codes, scales, zeros, g_idx, info = solve(W, needs_damping, 4, 100, True, act_order=True)
    assert float(info[0]) > 0.011 and float(info[1]) == 0
    assert torch.equal(needs_damping, before)
    # Negative definite: diagonal floor or RTN, and the matrix comes back.
    bad = -torch.eye(300)
    codes, *_, info = solve(W, bad, 4, 100, True)
    assert float(info[1]) in (1.0, 2.0) and torch.equal(bad, -torch.eye(300))
    # Not exactly symmetric: copied, untouched.
    skew = H.clone()
    skew[3, 5] += 1e-3
    before = skew.clone()
    solve(W, skew, 4, 100, True, act_order=True)
    assert torch.equal(skew, before)


def test_hessian_update_opcheck_and_fake_count():
    H = torch.zeros(32, 32)
    x = torch.randn(3, 5, 32)
    torch.library.opcheck(torch.ops.quantcore.gptq_hessian_update.default, (H.clone(), x, 7),
                          test_utils=("test_schema", "test_faketensor"))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        assert torch.ops.quantcore.gptq_hessian_update(mode.from_tensor(H), mode.from_tensor(x), 7) == 22
    assert torch.ops.quantcore.gptq_hessian_update(H, x, 7) == 22
