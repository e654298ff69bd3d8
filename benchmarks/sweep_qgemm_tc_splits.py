"""Times the tensor-core W4 GEMM for every split-K factor (the heuristic's
check): QUANTCORE_TC_SPLITS forces the factor, read at every call.

    python3 benchmarks/sweep_qgemm_tc_splits.py [--batches 1 16 64]
Prints one line per shape and split factor; "auto" is the heuristic's choice.
"""

from __future__ import annotations

import argparse
import os

import torch

import quantcore  # noqa: F401  (registers the ops)
from bench_cuda_qlinear import SHAPES, copies_for, timed
from quantcore.nn.tc_layout import to_tc_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16])
    args = ap.parse_args()
    for n, k in SHAPES:
        q = torch.randint(0, 2**31 - 1, (n, k // 8), dtype=torch.int32, device="cuda")
        tc = to_tc_layout(q, torch.rand(n, k // 128, device="cuda").half(), None)[:2]
        sets = [tc] + [tuple(t.clone() for t in tc) for _ in range(copies_for(q.numel() * 4) - 1)]
        for split in ["auto"] + [str(s) for s in args.splits]:
            os.environ.pop("QUANTCORE_TC_SPLITS", None)
            if split != "auto":
                os.environ["QUANTCORE_TC_SPLITS"] = split
            times = []
            for m in args.batches:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                times.append(timed(lambda i: torch.ops.quantcore.qgemm_tc(
                    x, sets[i % len(sets)][0], sets[i % len(sets)][1], None, None)) * 1e3)
            print(f"{n:6d} x {k:6d} splits {split:>4s}: " +
                  "  ".join(f"M={m} {t:6.1f} us" for m, t in zip(args.batches, times)), flush=True)
        os.environ.pop("QUANTCORE_TC_SPLITS", None)
        del sets


if __name__ == "__main__":
    main()
