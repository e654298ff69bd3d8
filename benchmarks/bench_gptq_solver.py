"""GPTQ solver speed: quantcore's C++ solver vs the PyTorch reference, same run.

One 4096 x 4096 linear layer (the issue's case) with a Hessian streamed from
128 x 2048 calibration tokens (synthetic, correlated: a low-rank mix plus noise
and a few outlier features, like real activations). Times:

* hessian: streaming H = 2/n X^T X over the 128 batches (quantcore's op; the
  reference's add_batch is the same GEMM);
* solve: everything after H (dead columns, damping, Cholesky, lazy blocks) for
  quantcore and for the line-by-line transcription of IST-DASLab/gptq's
  ``fasterquant`` (tests/python/gptq_reference.py), plus how many codes agree.

Run (CPU):  python benchmarks/bench_gptq_solver.py
     (GPU):  python benchmarks/bench_gptq_solver.py --device cuda --json $OUT/solver.json
Prints a Markdown table; ``--json`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import quantcore  # noqa: F401  (registers torch.ops.quantcore)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from gptq_reference import gptq_ref  # noqa: E402

CONFIGS = [  # (label, bits, group_size, act_order)
    ("W4 g128", 4, 128, False),
    ("W4 g128 act-order", 4, 128, True),
    ("W3 g128", 3, 128, False),
    ("W4 per-channel", 4, -1, False),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def peak_mib(device: torch.device, fn):
    """(result, seconds, peak MiB allocated during fn beyond what was live) on CUDA; None on CPU."""
    if device.type != "cuda":
        out, secs = timed(fn, device)
        return out, secs, None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out, secs = timed(fn, device)
    return out, secs, (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--configs", default=",".join(c[0] for c in CONFIGS),
                    help="comma-separated subset of: " + ", ".join(c[0] for c in CONFIGS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    rows, cols = args.rows, args.cols

    # Correlated activations: rank-256 structure + noise + 8 outlier features.
    mix = torch.randn(256, cols, device=device, generator=g) / 16
    outliers = torch.randperm(cols, device=device, generator=g)[:8]
    H = torch.zeros(cols, cols, device=device)
    seen = 0
    hessian_s = 0.0
    for _ in range(args.samples):
        x = torch.randn(args.seq_len, 256, device=device, generator=g) @ mix
        x += 0.1 * torch.randn(args.seq_len, cols, device=device, generator=g)
        x[:, outliers] *= 20
        sync(device)
        t0 = time.perf_counter()
        seen = torch.ops.quantcore.gptq_hessian_update(H, x, seen)
        sync(device)
        hessian_s += time.perf_counter() - t0
    W = torch.randn(rows, cols, device=device, generator=g) * 0.02

    info = (f"{rows}x{cols} layer, {args.samples}x{args.seq_len} tokens, device {device}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
               f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
            + f", torch {torch.__version__}")
    print(info)
    print(f"hessian streaming (quantcore op): {hessian_s:.2f} s\n")
    print("| config | quantcore s | reference s | speed-up | codes equal | quantcore peak MiB | reference peak MiB |")
    print("|---|---|---|---|---|---|---|")
    wanted = set(args.configs.split(","))
    results = []
    for label, bits, gs, act in CONFIGS:
        if label not in wanted:
            continue
        # Warm-up (first CUDA calls load cuSOLVER/cuBLAS; excluded from timing).
        torch.ops.quantcore.gptq_quantize(W[:64], H, bits, gs, True, act, False, 0.01, 128, False, torch.float16)
        ours, t_ours, m_ours = peak_mib(device, lambda: torch.ops.quantcore.gptq_quantize(
            W, H, bits, gs, True, act, False, 0.01, 128, False, torch.float16))
        ref, t_ref, m_ref = peak_mib(device, lambda: gptq_ref(W, H, bits, gs, True, act, blocksize=128,
                                                               scale_dtype=torch.float16))
        equal = float((ours[0] == ref).float().mean()) * 100
        row = {"config": label, "quantcore_s": t_ours, "reference_s": t_ref, "speedup": t_ref / t_ours,
               "codes_equal_pct": equal, "quantcore_peak_mib": m_ours, "reference_peak_mib": m_ref}
        results.append(row)
        mem = (lambda m: "-" if m is None else f"{m:.0f}")
        print(f"| {label} | {t_ours:.3f} | {t_ref:.3f} | {t_ref / t_ours:.2f}x | {equal:.3f}% | "
              f"{mem(m_ours)} | {mem(m_ref)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "hessian_s": hessian_s, "results": results}, indent=1))


if __name__ == "__main__":
    main()
