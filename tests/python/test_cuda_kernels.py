"""CUDA kernels (cpp/kernels/cuda/): the quantized GEMV / dequantize-then-GEMM
behind quantcore.qlinear, against a float reference, for odd shapes, every
group size, sym/asym, act-order, both activation dtypes and all scale dtypes.
Runs on a GPU with a build made with QUANTCORE_ENABLE_CUDA=ON; skipped elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,group,sym", [(14336, 128, True), (4096, 32, False), (16416, 96, False), (8192, -1, True)])
@pytest.mark.parametrize("m", [2, 3, 4])
def test_qlinear_w4_few_rows_and_long_k(dtype, k, group, sym, m):
    # 2-4 rows in one pass over the weights (K up to 16384: 512 lane-chunks), else
    # passes of 4 rows; N = 203 ends in a partial tile of rows.
    n = 203
    gs = k if group == -1 else group
    qweight, scales, zeros = packed(n, k, 4, gs, sym, torch.float16, seed=k + m)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    y = torch.ops.quantcore.qlinear(x, qweight, scales, zeros, bias, 4, gs)
    check(y, reference(x, qweight, scales, zeros, bias, 4, gs), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,group,sym", [(4096, 16, False), (4128, 32, True), (8192, -1, True), (14336, 128, False),
                                         (16384, 64, True), (16416, 96, False)])
def test_qlinear_w8_one_row_every_cta_size(dtype, k, group, sym):
    # One row of x at 8 bits. With QUANTCORE_W8_M1=1 (the next test runs this
    # one so) the decode kernel: one 16-code lane-chunk per lane up to K = 4096,
    # two (tiles of 2 rows) up to K = 16384 (K = 4128: 258 lane-chunks on 320
    # lanes, so idle lanes and no second chunks), the classic kernel beyond;
    # without it the classic kernel throughout. N = 203 ends in a partial tile.
    n = 203
    gs = k if group == -1 else group
    qweight, scales, zeros = packed(n, k, 8, gs, sym, torch.float16, seed=k)
    x = torch.randn(1, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    y = torch.ops.quantcore.qlinear(x, qweight, scales, zeros, bias, 8, gs)
    check(y, reference(x, qweight, scales, zeros, bias, 8, gs), dtype)


def test_w8_decode_kernel_in_a_process_that_switches_it_on():
    # QUANTCORE_W8_M1 is read once per process, so the 8-bit decode kernel's
    # cases (the test above, and the 8-bit PDL chain below) run in a child
    # pytest with it set.
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         "w8_one_row_every_cta_size or (dependent_layers and 1-8)"],
        env={**os.environ, "QUANTCORE_W8_M1": "1"}, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0 and " passed" in child.stdout, child.stdout[-3000:] + child.stderr[-2000:]


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


@pytest.mark.parametrize("shape", [(256,), (2, 1, 256), (2, 3, 256), (5, 8, 256)])
def test_qlinear_cuda_takes_leading_dims_and_per_channel_as_minus_one(shape):
    # The CPU op's conventions: x [..., K], group_size -1 for per channel.
    qweight, scales, zeros = packed(96, 256, 4, 256, False, torch.float16)
    x = torch.randn(*shape, dtype=torch.bfloat16, device="cuda")
    y = torch.ops.quantcore.qlinear(x, qweight, scales, zeros, None, 4, -1)
    assert y.shape == shape[:-1] + (96,) and y.dtype == torch.bfloat16
    check(y.reshape(-1, 96), reference(x.reshape(-1, 256), qweight, scales, zeros, None, 4, 256), torch.bfloat16)
    assert torch.ops.quantcore.qlinear(x.cpu().float(), qweight.cpu(), scales.cpu(), zeros.cpu(), None, 4,
                                       -1).shape == y.shape
    assert torch.equal(torch.ops.quantcore.dequantize_packed(qweight, scales, zeros, 4, -1, torch.float32),
                       torch.ops.quantcore.dequantize_packed(qweight, scales, zeros, 4, 256, torch.float32))


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


# ------------------------------------------------- tensor-core GEMM (qgemm_tc)

def tc_operands(n, k, group, sym, scale_dtype, seed=0):
    from quantcore.nn.tc_layout import to_tc_layout

    qweight, scales, zeros = packed(n, k, 4, group, sym, scale_dtype, seed=seed)
    return (qweight, scales, zeros), to_tc_layout(qweight, scales, zeros)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group,sym", [(32, True), (64, False), (128, True), (128, False), (-1, True), (-1, False)])
@pytest.mark.parametrize("m", [1, 3, 16, 17, 33, 64, 65, 130])
def test_qgemm_tc_matches_the_reference(dtype, group, sym, m):
    n, k = 160, 1024  # N not a multiple of the CTA's 128 outputs; 16 chunks of K (split-K)
    gs = k if group == -1 else group
    canon, tc = tc_operands(n, k, gs, sym, torch.float16, seed=m)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    y = torch.ops.quantcore.qgemm_tc(x, *tc, bias)
    assert y.dtype == dtype and y.shape == (m, n)
    check(y, reference(x, *canon, bias, 4, gs), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k,group,sym,scale_dtype", [
    (2, 2080, 8192, 128, True, torch.float16),
    (4, 2080, 4096, 32, False, torch.float32),
    (5, 2080, 1088, -1, False, torch.bfloat16),  # 34 K tiles: the warps' last ones partly idle
    (8, 1056, 2048, 64, True, torch.float16),
    (7, 40032, 64, 32, False, torch.float16),  # more strips than CTAs
    (8, 1056, 14336, 128, False, torch.float16),
    (13, 544, 16320, 96, False, torch.float16),  # 9-16 rows: the m16 GEMM; group of 3 K tiles
    (16, 96, 8192, -1, True, torch.float16),
])
def test_qgemm_tc_few_rows(dtype, m, n, k, group, sym, scale_dtype):
    # Up to 8 rows: weights as the mma's A operand, x in shared memory.
    gs = k if group == -1 else group
    canon, tc = tc_operands(n, k, gs, sym, scale_dtype, seed=m)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    y = torch.ops.quantcore.qgemm_tc(x, *tc, bias)
    check(y, reference(x, *canon, bias, 4, gs), dtype)
    assert torch.equal(y, torch.ops.quantcore.qgemm_tc(x, *tc, bias))


def test_qgemm_tc_split_k_counters_serve_the_next_call():
    # The stream-K GEMM's arrival counters live on between calls (one zeroed
    # buffer per stream; every launch leaves them zero): alternating shapes
    # and split counts, each call repeats its first result exactly.
    cases = []
    for m, n, k, splits in [(16, 2080, 8192, 0), (40, 1056, 4096, 3), (100, 4128, 2048, 0), (16, 2080, 8192, 5)]:
        canon, tc = tc_operands(n, k, 128, False, torch.float16, seed=m + splits)
        x = torch.randn(m, k, dtype=torch.float16, device="cuda")
        cases.append((x, tc, canon, splits))
    first = []
    for x, tc, canon, splits in cases:
        with pytest.MonkeyPatch.context() as mp:
            if splits:
                mp.setenv("QUANTCORE_TC_SPLITS", str(splits))
            y = torch.ops.quantcore.qgemm_tc(x, *tc, None)
        check(y, reference(x, *canon, None, 4, 128), torch.float16)
        first.append(y)
    for _ in range(3):
        for (x, tc, _, splits), y in zip(cases, first):
            with pytest.MonkeyPatch.context() as mp:
                if splits:
                    mp.setenv("QUANTCORE_TC_SPLITS", str(splits))
                assert torch.equal(torch.ops.quantcore.qgemm_tc(x, *tc, None), y)


def test_qgemm_tc_split_k_inside_a_cuda_graph():
    # 16 and 40 rows: the stream-K GEMM with split K. Warmed up on the capture
    # stream, the graph uses that stream's reused counters, so every replay
    # (and the eager calls between replays) relies on the kernel leaving them
    # zero; a capture on a fresh stream gets counters zeroed by the graph itself.
    canon, tc = tc_operands(2080, 8192, 128, True, torch.float16)
    xs = [torch.randn(m, 8192, dtype=torch.float16, device="cuda") for m in (16, 40)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        expected = [torch.ops.quantcore.qgemm_tc(x, *tc, None) for x in xs]
    for warm in (True, False):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream if warm else None):
            ys = [torch.ops.quantcore.qgemm_tc(x, *tc, None) for x in xs]
        for _ in range(3):
            with torch.cuda.stream(stream):  # one stream: the replay and the eager calls share its counters
                graph.replay()
                eager = [torch.ops.quantcore.qgemm_tc(x, *tc, None) for x in xs]
            torch.cuda.synchronize()
            for y, e, g in zip(ys, expected, eager):
                assert torch.equal(y, e) and torch.equal(g, e)
    check(ys[0], reference(xs[0], *canon, None, 4, 128), torch.float16)


@pytest.mark.parametrize("rows,bits", [(1, 4), (1, 8), (4, 4), (16, 4), (200, 4)])
def test_dependent_layers_inside_a_cuda_graph(rows, bits):
    # Under graph capture the kernels launch with programmatic dependent launch
    # (sm_90): each may start before the previous one ends and must wait before
    # reading its output. A chain of quantized layers, each reading the last
    # one's output, replayed from a graph must equal the same chain run eagerly.
    # (A build without the wait passed this test on the H100 but failed the
    # split-K graph test above, whose counters are read first thing.) The
    # weights are read before the wait: they are no kernel's output.
    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        # No bias: an fp32 bias would be cast to bf16 by a copy kernel before
        # every layer, and that kernel (no early launch) would separate the
        # quantized kernels, so a missing wait could not show.
        lin = torch.nn.Linear(1024, 1024, bias=False)
        torch.nn.init.normal_(lin.weight, std=1024 ** -0.5)  # outputs as large as inputs, layer after layer
        layers.append(quantcore.QuantLinear.from_linear(lin, RTNConfig(bits=bits, group_size=128)).cuda())

    def chain(x):  # nothing between the layers: each kernel directly follows the last
        for layer in layers:
            x = layer(x)
        return x

    static_x = torch.randn(rows, 1024, dtype=torch.bfloat16, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        chain(static_x)  # warm-up on the capture stream
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            static_y = chain(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):
        static_x.copy_(torch.randn(rows, 1024, dtype=torch.bfloat16, device="cuda"))
        graph.replay()
        eager = chain(static_x)
        # Same kernels, same results (dequantize + cuBLAS at 200 rows off Hopper may pick
        # another algorithm in a graph: close, not equal); a read of a stale input is far off.
        torch.testing.assert_close(static_y.float(), eager.float(), rtol=1e-2, atol=1e-2)
        assert float(eager.float().std()) > 0.1


def test_hopper_builds_have_the_wgmma_gemm():
    # On an H100 a build for sm_90a must route 9+ rows to the wgmma GEMM (the
    # tests below then exercise it); elsewhere they test the mma.sync GEMM.
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("not an sm_90 GPU")
    assert quantcore._C.cuda_wgmma, "built without sm_90a code (CMAKE_CUDA_ARCHITECTURES=90a-real)"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k,group,sym,scale_dtype,splits", [
    (9, 256, 1024, 128, True, torch.float16, 0),
    (16, 4096, 4096, 128, True, torch.float16, 0),
    (16, 4096, 4096, 128, False, torch.float16, 7),
    (24, 160, 2048, 32, False, torch.float32, 0),  # N past the last CTA's first strip
    (33, 544, 1152, 96, False, torch.bfloat16, 0),  # group of 3 K tiles
    (64, 1056, 4096, -1, True, torch.float16, 0),
    (64, 1056, 4096, -1, False, torch.bfloat16, 3),
    (100, 288, 2048, 64, False, torch.float16, 0),
    (130, 2080, 1024, 128, True, torch.float16, 0),
    (256, 4096, 1024, 128, False, torch.bfloat16, 0),
    (256, 800, 8192, 32, True, torch.float32, 5),
    # Forced counts of 9-16 slices: with the cluster sum forced, Hopper's
    # non-portable cluster sizes; 9 slices' reduce-scatter does not fit the
    # 128-row tile's stages with 16-bit scales, so that pass runs 8 (the
    # planner's pass keeps 9, through the workspace).
    (16, 4096, 4096, 128, True, torch.float16, 16),
    (64, 1056, 4096, 64, False, torch.bfloat16, 11),
    (256, 544, 8192, 128, True, torch.bfloat16, 9),
])
def test_qgemm_tc_wgmma_rows(dtype, m, n, k, group, sym, scale_dtype, splits, monkeypatch):
    # 9+ rows with K % 128 == 0: on Hopper the wgmma GEMM (qgemm_wg_cuda.cu),
    # asked for where it is not the default, with the slices of K it picks and
    # with forced ones; then the same without it.
    monkeypatch.setenv("QUANTCORE_WGMMA", "1")
    if splits:
        monkeypatch.setenv("QUANTCORE_TC_SPLITS", str(splits))
    gs = k if group == -1 else group
    canon, tc = tc_operands(n, k, gs, sym, scale_dtype, seed=m + n)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    y = torch.ops.quantcore.qgemm_tc(x, *tc, bias)  # the planner's split-K sum
    check(y, reference(x, *canon, bias, 4, gs), dtype)
    assert torch.equal(y, torch.ops.quantcore.qgemm_tc(x, *tc, bias))
    # Each split-K sum forced: through the workspace, and in a thread-block
    # cluster's shared memory. The same slices added in the same order give the
    # same bits; a forced count is kept by the planner's choice too.
    monkeypatch.setenv("QUANTCORE_WG_CLUSTER", "0")
    y_workspace = torch.ops.quantcore.qgemm_tc(x, *tc, bias)
    check(y_workspace, reference(x, *canon, bias, 4, gs), dtype)
    if splits:
        assert torch.equal(y_workspace, y)
    monkeypatch.setenv("QUANTCORE_WG_CLUSTER", "1")
    y_cluster = torch.ops.quantcore.qgemm_tc(x, *tc, bias)
    check(y_cluster, reference(x, *canon, bias, 4, gs), dtype)
    assert torch.equal(y_cluster, torch.ops.quantcore.qgemm_tc(x, *tc, bias))
    if cluster_runs_forced_split(m, splits, scale_dtype):
        assert torch.equal(y_cluster, y_workspace)
    monkeypatch.setenv("QUANTCORE_WG_CLUSTER", "yes")
    with pytest.raises(ValueError, match="QUANTCORE_WG_CLUSTER"):
        torch.ops.quantcore.qgemm_tc(x, *tc, bias)
    monkeypatch.delenv("QUANTCORE_WG_CLUSTER")
    monkeypatch.setenv("QUANTCORE_WGMMA", "0")
    check(torch.ops.quantcore.qgemm_tc(x, *tc, bias), reference(x, *canon, bias, 4, gs), dtype)
    monkeypatch.setenv("QUANTCORE_WGMMA", "2")
    with pytest.raises(ValueError, match="QUANTCORE_WGMMA"):
        torch.ops.quantcore.qgemm_tc(x, *tc, bias)


def cluster_runs_forced_split(m, splits, scale_dtype):
    # Whether the cluster sum keeps a forced split count: the 128-row tiles
    # (65+ rows) cannot fit 9, 12 or 15 slices' reduce-scatter in their stages
    # with 16-bit scales, nor 15 with fp32 ones, and run one slice fewer.
    if splits <= 0:
        return False  # each sum's planner picks its own count
    if m <= 64:
        return True
    return splits not in ((15,) if scale_dtype == torch.float32 else (9, 12, 15))


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [64, 4160])
def test_qgemm_tc_reads_every_scale_dtype_and_short_or_long_k(scale_dtype, k):
    canon, tc = tc_operands(64, k, 64, False, scale_dtype)
    x = torch.randn(5, k, dtype=torch.bfloat16, device="cuda")
    check(torch.ops.quantcore.qgemm_tc(x, *tc, None), reference(x, *canon, None, 4, 64), torch.bfloat16)


def test_qgemm_tc_is_deterministic_and_reads_unaligned_views():
    canon, tc = tc_operands(4096, 4096, 128, True, torch.float16)
    x = torch.randn(7, 4096 + 1, dtype=torch.float16, device="cuda")[:, 1:]  # not 16-byte aligned
    y1 = torch.ops.quantcore.qgemm_tc(x, *tc, None)
    y2 = torch.ops.quantcore.qgemm_tc(x.contiguous(), *tc, None)
    assert torch.equal(y1, y2)
    check(y1, reference(x, *canon, None, 4, 128), torch.float16)


def test_qgemm_tc_refuses_bad_inputs():
    _, (codes, scales, zeros) = tc_operands(64, 128, 32, True, torch.float16)
    x = torch.randn(2, 128, dtype=torch.float16, device="cuda")
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        torch.ops.quantcore.qgemm_tc(x.float(), codes, scales, None, None)
    with pytest.raises(ValueError, match=r"x must be \[M, 128\]"):
        torch.ops.quantcore.qgemm_tc(x[:, :64].contiguous(), codes, scales, None, None)
    with pytest.raises(ValueError, match="scales must be"):
        torch.ops.quantcore.qgemm_tc(x, codes, scales[:, :1].contiguous(), None, None)
    with pytest.raises(ValueError, match="zeros"):
        torch.ops.quantcore.qgemm_tc(x, codes, scales, torch.zeros(3, dtype=torch.uint8, device="cuda"), None)
    with pytest.raises(ValueError, match="same CUDA device|one CUDA device"):
        torch.ops.quantcore.qgemm_tc(x.cpu(), codes, scales, None, None)
    with pytest.raises(ValueError, match="bias"):
        torch.ops.quantcore.qgemm_tc(x, codes, scales, None, torch.zeros(3, dtype=torch.float16, device="cuda"))


def test_qgemm_tc_opcheck():
    _, tc = tc_operands(64, 128, 32, False, torch.float16)
    x = torch.randn(3, 128, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops.quantcore.qgemm_tc.default, (x, *tc, None))


@pytest.mark.parametrize("sym", [True, False])
def test_quant_linear_builds_the_tc_layout_on_cuda_and_uses_it_for_mid_batches(sym, monkeypatch):
    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 192)
    q = quantcore.QuantLinear.from_linear(lin, RTNConfig(bits=4, group_size=128, sym=sym))
    assert q._tc_codes is None
    w_ref, b_ref = q.dequantize(torch.float64), q.bias.double()
    q = q.cuda()
    assert q._tc_codes is not None and q._tc_codes.is_cuda and q._tc_scales.dtype == q.scales.dtype
    assert not any(k.startswith("_tc") for k in q.state_dict())
    calls = []
    original = torch.ops.quantcore.qgemm_tc

    def spy(*args):
        calls.append(args[0].shape[0])
        return original(*args)

    monkeypatch.setattr(torch.ops.quantcore, "qgemm_tc", spy)
    for m in (1, 3, 16, 100, 200, 300):
        x = torch.randn(m, 512, device="cuda", dtype=torch.bfloat16)
        expected = torch.nn.functional.linear(x.double().cpu(), w_ref, b_ref)
        check(q(x), expected, torch.bfloat16)
    # 129-256 rows: the wgmma GEMM on Hopper builds that have it, else dequantize + cuBLAS.
    hopper = quantcore._C.cuda_wgmma and torch.cuda.get_device_capability() == (9, 0)
    assert calls == ([3, 16, 100, 200] if hopper else [3, 16, 100])
    q = q.half().cpu()
    assert q._tc_codes is None and q.scales.dtype == torch.float16


# ------------------------------------------------------ pack / unpack / RTN on CUDA

@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("word_bits", [8, 32])
@pytest.mark.parametrize("signed", [False, True])
def test_pack_and_unpack_on_cuda_equal_the_cpu_kernels(bits, word_bits, signed):
    g = torch.Generator().manual_seed(bits)
    cols = 64 * 3  # every width fills whole 32-bit words
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    codes = torch.randint(lo, hi, (7, cols), generator=g).to(torch.int8 if signed else torch.uint8)
    want = quantcore.ops.pack(codes, bits, word_bits)
    got = quantcore.ops.pack(codes.cuda(), bits, word_bits)
    assert got.is_cuda and torch.equal(got.cpu(), want)
    back = quantcore.ops.unpack(got, bits, signed)
    assert back.is_cuda and torch.equal(back.cpu(), codes)


def test_pack_on_cuda_refuses_codes_out_of_range():
    codes = torch.zeros(2, 32, dtype=torch.uint8, device="cuda")
    codes[1, 5] = 16
    with pytest.raises(ValueError, match="flat index 37 .value 16. does not fit in 4 unsigned bits"):
        quantcore.ops.pack(codes, 4, 32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group,sym", [(32, True), (64, False), (128, True), (-1, False), (0, True)])
@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rtn_on_cuda_gives_the_cpu_codes(bits, group, sym, scale_dtype):
    g = torch.Generator().manual_seed(bits * 7 + max(group, 0))
    w = torch.randn(37, 256, generator=g) * 0.05
    w[3, 10] = 0.9  # an outlier
    w[5, :64] = 0.0  # an all-zero group
    want = quantcore.ops.rtn_quantize(w, bits, group, sym, scale_dtype=scale_dtype)
    got = quantcore.ops.rtn_quantize(w.cuda(), bits, group, sym, scale_dtype=scale_dtype)
    for a, b in zip(got, want):
        assert a.is_cuda and a.dtype == b.dtype and torch.equal(a.cpu(), b)


@pytest.mark.parametrize("sym", [True, False])
def test_rtn_mse_clip_on_cuda_matches_the_cpu_search(sym):
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(1)) * 0.05
    want = quantcore.ops.rtn_quantize(w, 3, 128, sym, mse_clip=True)
    got = [t.cpu() for t in quantcore.ops.rtn_quantize(w.cuda(), 3, 128, sym, mse_clip=True)]
    same = (got[1] == want[1]).float().mean()
    assert same >= 0.99, same  # candidates whose errors tie to the last bit may differ

    def group_err(codes, scales, zeros):
        z = zeros.float().repeat_interleave(128, 1)
        d = (codes.float() - z) * scales.float().repeat_interleave(128, 1) - w
        return (d * d).view(64, 4, 128).sum(-1)

    assert bool((group_err(*got) <= group_err(*want) * (1 + 1e-4) + 1e-12).all())


def test_rtn_on_cuda_refuses_bad_inputs():
    w = torch.randn(4, 64, device="cuda")
    w[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantcore.ops.rtn_quantize(w, 4, 32)
    with pytest.raises(ValueError, match="overflows the scale dtype"):
        quantcore.ops.rtn_quantize(torch.full((2, 32), 1e6, device="cuda"), 4, 32, scale_dtype=torch.float16)
    with pytest.raises(ValueError, match="does not divide"):
        quantcore.ops.rtn_quantize(torch.randn(2, 48, device="cuda"), 4, 32)


def test_quant_linear_from_a_cuda_linear_quantizes_on_the_gpu():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    want = quantcore.QuantLinear.from_linear(lin, RTNConfig(bits=4, group_size=64, sym=False))
    got = quantcore.QuantLinear.from_linear(lin.cuda(), RTNConfig(bits=4, group_size=64, sym=False))
    assert got.qweight.is_cuda and torch.equal(got.qweight.cpu(), want.qweight)
    assert torch.equal(got.scales.cpu(), want.scales) and torch.equal(got.zeros.cpu(), want.zeros)
