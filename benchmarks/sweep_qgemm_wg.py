"""The Hopper wgmma W4 GEMM against the mma.sync GEMM, dequantize + cuBLAS and
cuBLAS bf16, by rows of x (where should qgemm_tc route to it?).

Run on an H100 with a QUANTCORE_ENABLE_CUDA=ON build for sm_90a:
    python benchmarks/sweep_qgemm_wg.py [--m 16 64 128 256] [--json out.json]
Same timing and weight rotation as bench_cuda_qlinear.py (W4 g128, fp16
scales, bf16 activations). QUANTCORE_WGMMA=1 / 0 picks the kernel per call.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

import quantcore
from bench_cuda_qlinear import SHAPES, copies_for, timed
from quantcore.nn.tc_layout import to_tc_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, nargs="+", default=[16, 32, 64, 128, 192, 256, 384, 512])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    assert quantcore._C.cuda_wgmma, "needs a build with sm_90a code"
    rows = []
    for n, k in SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        codes, scales, _ = quantcore.ops.rtn_quantize(w.float().cpu(), bits=4, group_size=128)
        q4 = (quantcore.ops.pack(codes, 4, 32).cuda(), scales.cuda())
        tc = to_tc_layout(q4[0], q4[1], None)[:2]
        nb = q4[0].numel() * 4 + q4[1].numel() * 2
        bfs = [w] + [w.clone() for _ in range(copies_for(w.numel() * 2) - 1)]
        q4s = [q4] + [tuple(t.clone() for t in q4) for _ in range(copies_for(nb) - 1)]
        tcs = [tc] + [tuple(t.clone() for t in tc) for _ in range(copies_for(nb) - 1)]
        for m in args.m:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            row = {"N": n, "K": k, "M": m, "bf16_ms": timed(lambda i: x @ bfs[i % len(bfs)].T),
                   "dequant_mm_ms": timed(lambda i: torch.ops.quantcore.qlinear(
                       x, q4s[i % len(q4s)][0], q4s[i % len(q4s)][1], None, None, 4, 128))}
            for name, flag in (("mma_ms", "0"), ("wgmma_ms", "1")):
                os.environ["QUANTCORE_WGMMA"] = flag
                row[name] = timed(lambda i: torch.ops.quantcore.qgemm_tc(x, *tcs[i % len(tcs)], None, None))
            del os.environ["QUANTCORE_WGMMA"]
            rows.append(row)
            print(f"{n:6d} x {k:6d} M={m:4d} | bf16 {row['bf16_ms'] * 1e3:7.1f} us | mma.sync "
                  f"{row['mma_ms'] * 1e3:7.1f} | wgmma {row['wgmma_ms'] * 1e3:7.1f} | dequant+cuBLAS "
                  f"{row['dequant_mm_ms'] * 1e3:7.1f} | best W4 vs bf16 "
                  f"{row['bf16_ms'] / min(row['mma_ms'], row['wgmma_ms'], row['dequant_mm_ms']):.2f}x", flush=True)
        del bfs, q4s, tcs
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
