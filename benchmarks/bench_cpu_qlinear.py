"""CPU quantized matmul: quantcore W4/W8 kernels vs torch fp32 and torch's int4/int8 ops.

Run:  python benchmarks/bench_cpu_qlinear.py [--quick] [--passes N] [--json out.json]
          [--markdown out.md] [--plot out.png]

For each (N, K) and M it times, on the same threads:
  fp32         x @ W.T (MKL)                       [baseline]
  qc W4 g128   quantcore.ops.qlinear, 4-bit sym, group 128
  torch W4     torch._weight_int4pack_mm_for_cpu, group 128 (fp32 and bf16 activations; best kept)
  qc W8        quantcore.ops.qlinear, 8-bit per-channel
  torch W8     torch._weight_int8pack_mm (fp32 and bf16 activations; best kept)
and prints speedups over fp32 and over torch's own quantized op, plus the
weight bandwidth each achieves (weight bytes read / time). "cold" rows rotate
through enough weight copies (> L3) that every call streams weights from DRAM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date

import torch

import quantcore

SHAPES = [(4096, 4096), (4096, 14336)]
MS = [1, 8, 32, 128]
GROUP = 128


def timeit(fn, min_time=0.4, min_runs=5, max_runs=200):
    for _ in range(2):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Rotating:
    """Calls fn(i) with i cycling over `copies`, so each call touches fresh weights."""

    def __init__(self, fn, copies):
        self.fn, self.copies, self.i = fn, copies, 0

    def __call__(self):
        self.fn(self.i)
        self.i = (self.i + 1) % self.copies


def l3_bytes() -> int:
    try:
        import re
        out = os.popen("lscpu -B 2>/dev/null").read()
        m = re.search(r"L3 cache:\s+(\d+)", out)
        return int(m.group(1)) if m else 32 << 20
    except Exception:  # pragma: no cover
        return 32 << 20


def read_bandwidth(mib=256):
    """Memory read bandwidth now (GB/s): torch sums over buffers larger than L3."""
    bufs = [torch.ones(mib * 2**20 // 4) for _ in range(3)]
    times = []
    for i in range(15):
        t0 = time.perf_counter()
        bufs[i % 3].sum()
        times.append(time.perf_counter() - t0)
    return mib * 2**20 / statistics.median(times[3:]) / 1e9


def make_weights(n, k, copies):
    """Per copy: fp32 W, quantcore W4/W8 buffers, torch int4/int8 buffers."""
    out = []
    for c in range(copies):
        g = torch.Generator().manual_seed(c)
        w = torch.randn(n, k, generator=g) * 0.02
        codes4, s4, _ = quantcore.ops.rtn_quantize(w, 4, GROUP, True, scale_dtype=torch.float32)
        codes8, s8, _ = quantcore.ops.rtn_quantize(w, 8, -1, True, scale_dtype=torch.float32)
        q4 = quantcore.ops.pack(codes4, 4)
        q8 = quantcore.ops.pack(codes8, 8)
        # torch int4 (CPU): uint8 codes [N, K/2] packed by its converter; scale/zero [K/g, N, 2]
        t4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes4.to(torch.int32), 1)
        sz = torch.stack([s4.t(), torch.zeros_like(s4.t())], dim=-1).contiguous()
        t8 = (codes8.to(torch.int16) - 128).to(torch.int8)
        out.append(dict(w=w, q4=q4, s4=s4, q8=q8, s8=s8, t4=t4, sz=sz, sz16=sz.bfloat16(), t8=t8,
                        s8v=s8.view(-1)))
    return out


def bench_shape(n, k, ms, cold):
    copies = 1
    if cold:
        w4_bytes = n * k // 2
        copies = max(2, (2 * l3_bytes()) // w4_bytes + 1)
    ws = make_weights(n, k, copies)
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        xb = x.bfloat16()

        def run(fn):
            return timeit(Rotating(fn, copies)) if cold else timeit(lambda: fn(0))

        r = {"N": n, "K": k, "M": m, "cold": cold}
        r["fp32"] = run(lambda i: x @ ws[i]["w"].t())
        r["qc_w4_f32"] = run(lambda i: quantcore.ops.qlinear(x, ws[i]["q4"], ws[i]["s4"], None, None, 4, GROUP))
        r["qc_w4_bf16"] = run(lambda i: quantcore.ops.qlinear(xb, ws[i]["q4"], ws[i]["s4"], None, None, 4, GROUP))
        # torch's fp32-activation int4/int8 paths take seconds per call at large M
        # (a lookup-table dequant per element); they are timed up to M = 8 only.
        slow_ok = m <= 8
        r["torch_w4_f32"] = run(lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, ws[i]["t4"], GROUP, ws[i]["sz"])) if slow_ok else float("inf")
        r["torch_w4_bf16"] = run(lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, ws[i]["t4"], GROUP, ws[i]["sz16"]))
        r["qc_w8_f32"] = run(lambda i: quantcore.ops.qlinear(x, ws[i]["q8"], ws[i]["s8"], None, None, 8, -1))
        r["qc_w8_bf16"] = run(lambda i: quantcore.ops.qlinear(xb, ws[i]["q8"], ws[i]["s8"], None, None, 8, -1))
        r["torch_w8_f32"] = run(lambda i: torch._weight_int8pack_mm(
            x, ws[i]["t8"], ws[i]["s8v"])) if slow_ok else float("inf")
        r["torch_w8_bf16"] = run(lambda i: torch._weight_int8pack_mm(xb, ws[i]["t8"], ws[i]["s8v"].bfloat16()))
        r["w4_bytes"] = ws[0]["q4"].numel() * 4 + ws[0]["s4"].numel() * 2  # fp16 scales as stored
        r["w8_bytes"] = ws[0]["q8"].numel() * 4 + ws[0]["s8"].numel() * 2
        r["fp32_bytes"] = n * k * 4
        rows.append(r)
        print(format_row(r), flush=True)
        if m <= 8:  # correctness spot check against torch's own int4 result
            ours = quantcore.ops.qlinear(xb, ws[0]["q4"], ws[0]["s4"], None, None, 4, GROUP).float()
            theirs = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, ws[0]["t4"], GROUP, ws[0]["sz16"]).float()
            ref = x.bfloat16().float() @ quantcore.ops.dequantize(ws[0]["q4"], ws[0]["s4"], None, 4, GROUP).t()
            r["rel_err_qc"] = float((ours - ref).norm() / ref.norm())
            r["rel_err_torch"] = float((theirs - ref).norm() / ref.norm())
    return rows


def format_row(r):
    qc4 = min(r["qc_w4_f32"], r["qc_w4_bf16"])
    t4 = min(r["torch_w4_f32"], r["torch_w4_bf16"])
    qc8 = min(r["qc_w8_f32"], r["qc_w8_bf16"])
    t8 = min(r["torch_w8_f32"], r["torch_w8_bf16"])
    gbs = lambda b, t: b / t / 1e9
    return (f"| {r['N']}x{r['K']} | {r['M']:>3} | {'cold' if r['cold'] else 'hot'} "
            f"| {r['fp32']*1e3:8.3f} "
            f"| {r['qc_w4_f32']*1e3:7.3f} / {r['qc_w4_bf16']*1e3:7.3f} | {t4*1e3:8.3f} "
            f"| **{r['fp32']/qc4:5.2f}x** | **{t4/qc4:5.2f}x** "
            f"| {r['qc_w8_f32']*1e3:7.3f} / {r['qc_w8_bf16']*1e3:7.3f} | {t8*1e3:8.3f} "
            f"| **{r['fp32']/qc8:5.2f}x** | **{t8/qc8:5.2f}x** "
            f"| {gbs(r['fp32_bytes'], r['fp32']):5.1f} / {gbs(r['w4_bytes'], qc4):5.1f} / {gbs(r['w8_bytes'], qc8):5.1f} |")


def plot(rows, info, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SHAPES), figsize=(6 * len(SHAPES), 4.2), sharey=True)
    for ax, (n, k) in zip(axes, SHAPES):
        hot = [r for r in rows if r["N"] == n and r["K"] == k and not r["cold"]]
        m = [r["M"] for r in hot]
        series = {
            "quantcore W4 g128": [r["fp32"] / min(r["qc_w4_f32"], r["qc_w4_bf16"]) for r in hot],
            "torch int4 g128": [r["fp32"] / min(r["torch_w4_f32"], r["torch_w4_bf16"]) for r in hot],
            "quantcore W8": [r["fp32"] / min(r["qc_w8_f32"], r["qc_w8_bf16"]) for r in hot],
            "torch int8": [r["fp32"] / min(r["torch_w8_f32"], r["torch_w8_bf16"]) for r in hot],
        }
        for (label, ys), style in zip(series.items(), ["o-", "o--", "s-", "s--"]):
            ax.plot(m, ys, style, label=label)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(m)
        ax.set_xticklabels([str(v) for v in m])
        ax.set_title(f"N x K = {n} x {k}")
        ax.set_xlabel("M (rows of x)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speed-up over torch fp32 x @ W.T")
    axes[0].legend()
    fig.suptitle("CPU weight-only quantized matmul (best activation dtype of each)\n" + info, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


HEADER = ("| N x K | M | weights | fp32 ms | qc W4 ms (f32 / bf16 act) | torch W4 ms | W4 vs fp32 | W4 vs torch "
          "| qc W8 ms (f32 / bf16 act) | torch W8 ms | W8 vs fp32 | W8 vs torch | GB/s fp32 / W4 / W8 |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="M=1 and 8 only, hot weights only")
    ap.add_argument("--passes", type=int, default=1,
                    help="repeat the whole sweep and keep each cell's fastest median "
                         "(a shared machine's noise comes in bursts longer than one cell)")
    ap.add_argument("--json", help="write raw timings here")
    ap.add_argument("--markdown", help="write the markdown table here")
    ap.add_argument("--plot", help="write a PNG of the speed-ups over fp32 vs M here")
    ap.add_argument("--from-json", help="re-plot / re-print a previous --json file instead of timing")
    args = ap.parse_args(argv)
    ms = [1, 8] if args.quick else MS
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        info, rows = saved["info"], saved["rows"]
        print(info)
        print(HEADER)
        for r in rows:
            print(format_row(r))
    else:
        bw_before = read_bandwidth()
        info = (f"{date.today()} | {platform.processor() or platform.machine()} | torch {torch.__version__} | "
                f"threads {torch.get_num_threads()} | quantcore ISA {quantcore.cpu_isa()} | "
                f"DRAM read {bw_before:.0f} GB/s")
        print(info)
        print(HEADER)
        rows = []
        for pass_no in range(args.passes):
            if args.passes > 1:
                print(f"-- pass {pass_no + 1} of {args.passes}", flush=True)
            sweep = []
            for n, k in SHAPES:
                sweep += bench_shape(n, k, ms, cold=False)
                if not args.quick:
                    sweep += bench_shape(n, k, [1], cold=True)
            rows = sweep if not rows else [
                {key: (min(a[key], b[key]) if isinstance(a[key], float) and not key.startswith("rel_err")
                       else a[key]) for key in a} for a, b in zip(rows, sweep)]
        info += f" (before) / {read_bandwidth():.0f} GB/s (after)"
        if args.passes > 1:
            print(f"-- fastest of {args.passes} passes per cell; {info}")
            print(HEADER)
            for r in rows:
                print(format_row(r))
    errs = [(r["rel_err_qc"], r["rel_err_torch"]) for r in rows if "rel_err_qc" in r]
    if errs:
        print(f"\nW4 output error vs x @ dequant(W).T (bf16 activations), worst case: quantcore "
              f"{max(e[0] for e in errs):.2e}, torch int4 {max(e[1] for e in errs):.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, info, args.plot)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(info + "\n\n" + HEADER + "\n" + "\n".join(format_row(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
