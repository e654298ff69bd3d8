"""CUDA quantized matmul vs cuBLAS bf16 and torch's int4 kernel (issue 5's table).

Run on a GPU with a QUANTCORE_ENABLE_CUDA=ON build:
    python benchmarks/bench_cuda_qlinear.py [--json out.json]
For each N x K and M: cuBLAS bf16 ``x @ W.T``, ``torch._weight_int4pack_mm``
(tinygemm, W4 g128), quantcore's ``qlinear`` (GEMV up to M = 8, else dequantize +
cuBLAS; W4 g128 symmetric, fp16 scales; W8 per-channel at M = 1) and quantcore's
tensor-core GEMM ``qgemm_tc`` (same weights, repacked), all with bf16 activations. Every weight set
is replicated until the copies exceed 4x the L2 cache and the copies are used
in turn, so weights stream from HBM. Times are CUDA-event medians over runs of
20 back-to-back calls, replayed from a CUDA graph (``--timing graph``, the default: GPU
time only) or launched from Python (``--timing eager``). The copy
bandwidth (a device-to-device copy of 1 GiB) is measured in the same run;
GB/s for M = 1 counts the weight bytes (codes + scales) of one call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import quantcore
from quantcore.nn.tc_layout import to_tc_layout

SHAPES = [(28672, 8192), (8192, 8192), (14336, 4096), (4096, 14336)]
BATCHES = [1, 4, 16, 64, 256]


TIMING = "graph"  # or "eager"; set by --timing


def timed(fn, samples: int = 15, reps: int = 20) -> float:
    """Milliseconds per call of fn(i): the median over `samples` of `reps` calls
    between two events. With TIMING "graph" (the default) the `reps` calls are
    captured once in a CUDA graph and replayed, so only GPU time counts: eager
    calls of a ~15 us kernel are bound by the host's dispatch (Python + op
    checks), which varied 14-29 us run to run on the H100 machine. "eager"
    launches them from Python, so the host's launch overhead overlaps the GPU's
    work only where the kernel is the slower of the two."""
    if TIMING == "graph":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(reps):  # warm-up on the capture stream (its split-K counters exist then)
                fn(i)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                for i in range(reps):
                    fn(i)
        torch.cuda.current_stream().wait_stream(side)
        graph.replay()
        torch.cuda.synchronize()
        run = graph.replay
    else:
        for i in range(reps):
            fn(i)
        torch.cuda.synchronize()

        def run():
            for i in range(reps):
                fn(i)
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return sorted(times)[len(times) // 2]


def copies_for(nbytes: int) -> int:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(2, -(-4 * l2 // max(nbytes, 1)))


def copy_bandwidth() -> float:
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    global TIMING
    mode, TIMING = TIMING, "eager"  # a 1 GiB copy is long enough; a captured copy measured ~20% slower
    try:
        ms = timed(lambda i: b.copy_(a), samples=5, reps=5)
    finally:
        TIMING = mode
    return 2 * a.numel() / ms / 1e6  # GB/s, read + write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    ap.add_argument("--timing", choices=["graph", "eager"], default="graph",
                    help="replay each run of calls from a CUDA graph (GPU time only) or launch them from Python")
    args = ap.parse_args()
    global TIMING
    TIMING = args.timing
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth()
    print(f"{dev}, torch {torch.__version__}; device-to-device copy {copy_gbs:.0f} GB/s")
    rows = []
    for n, k in SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        codes, scales, _ = quantcore.ops.rtn_quantize(w.float().cpu(), bits=4, group_size=128)
        q4 = (quantcore.ops.pack(codes, 4, 32).cuda(), scales.cuda())
        tc = to_tc_layout(q4[0], q4[1], None)[:2]
        codes8, scales8, _ = quantcore.ops.rtn_quantize(w.float().cpu(), bits=8, group_size=-1)
        q8 = (quantcore.ops.pack(codes8, 8, 32).cuda(), scales8.cuda())
        # torch's tinygemm layout (its int4 op; asymmetric scale+zero per group).
        w_int = codes.to(torch.int32).cuda()
        try:  # torch >= 2.5 takes two codes per byte (even column in the high nibble)
            tiny_packed = torch._convert_weight_to_int4pack(
                (w_int[:, ::2] << 4 | w_int[:, 1::2]).to(torch.uint8), 8)
        except RuntimeError:
            tiny_packed = torch._convert_weight_to_int4pack(w_int, 8)
        sz = torch.stack([scales.float(), torch.zeros_like(scales.float())], -1).transpose(0, 1).contiguous()
        tiny = (tiny_packed, sz.to(torch.bfloat16).cuda())
        bf16_bytes, w4_bytes = w.numel() * 2, q4[0].numel() * 4 + q4[1].numel() * 2
        w8_bytes = q8[0].numel() * 4 + q8[1].numel() * 2
        sets = {
            "bf16": [w] + [w.clone() for _ in range(copies_for(bf16_bytes) - 1)],
            "w4": [q4] + [tuple(t.clone() for t in q4) for _ in range(copies_for(w4_bytes) - 1)],
            "tc": [tc] + [tuple(t.clone() for t in tc) for _ in range(copies_for(w4_bytes) - 1)],
            "w8": [q8] + [tuple(t.clone() for t in q8) for _ in range(copies_for(w8_bytes) - 1)],
            "tiny": [tiny] + [tuple(t.clone() for t in tiny) for _ in range(copies_for(w4_bytes) - 1)],
        }
        for m in args.batches:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            bf = sets["bf16"]
            t_bf16 = timed(lambda i: x @ bf[i % len(bf)].T)
            w4s = sets["w4"]
            t_w4 = timed(lambda i: torch.ops.quantcore.qlinear(x, w4s[i % len(w4s)][0], w4s[i % len(w4s)][1],
                                                              None, None, 4, 128))
            tcs = sets["tc"]
            t_tc = timed(lambda i: torch.ops.quantcore.qgemm_tc(x, tcs[i % len(tcs)][0], tcs[i % len(tcs)][1],
                                                               None, None))
            ts = sets["tiny"]
            t_tiny = timed(lambda i: torch._weight_int4pack_mm(x, ts[i % len(ts)][0], 128, ts[i % len(ts)][1]))
            # w4: the faster of the GEMV/dequantize path (qlinear) and the tensor-core GEMM.
            row = {"N": n, "K": k, "M": m, "bf16_ms": t_bf16, "w4_qlinear_ms": t_w4, "w4_tc_ms": t_tc,
                   "torch_int4_ms": t_tiny}
            t_w4 = min(t_w4, t_tc)
            row.update(w4_ms=t_w4, w4_vs_bf16=t_bf16 / t_w4, w4_vs_torch_int4=t_tiny / t_w4)
            if m == 1:
                w8s = sets["w8"]
                t_w8 = timed(lambda i: torch.ops.quantcore.qlinear(x, w8s[i % len(w8s)][0], w8s[i % len(w8s)][1],
                                                                  None, None, 8, k))
                row.update(w8_ms=t_w8, w8_vs_bf16=t_bf16 / t_w8, w4_gbs=w4_bytes / t_w4 / 1e6,
                           w8_gbs=w8_bytes / t_w8 / 1e6, bf16_gbs=bf16_bytes / t_bf16 / 1e6)
            rows.append(row)
            extra = (f" | W8 {row['w8_ms'] * 1e3:6.1f} us ({row['w8_vs_bf16']:.2f}x) | GB/s bf16 "
                     f"{row['bf16_gbs']:.0f} W4 {row['w4_gbs']:.0f} ({row['w4_gbs'] / copy_gbs:.0%} of copy) "
                     f"W8 {row['w8_gbs']:.0f}" if m == 1 else "")
            print(f"{n:6d} x {k:6d} M={m:4d} | bf16 {t_bf16 * 1e3:7.1f} us | W4 {t_w4 * 1e3:7.1f} us "
                  f"[qlinear {row['w4_qlinear_ms'] * 1e3:.1f}, tc {t_tc * 1e3:.1f}] "
                  f"({row['w4_vs_bf16']:.2f}x bf16, {row['w4_vs_torch_int4']:.2f}x torch int4 "
                  f"{t_tiny * 1e3:.1f} us){extra}", flush=True)
        del sets
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps({"device": dev, "torch": torch.__version__, "timing": TIMING, "copy_gbs": copy_gbs,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
