"""Runs the tensor-core W4 GEMM a few times on one shape, for Nsight Compute.

    ncu --kernel-name regex:qgemm_w4_tc --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section Occupancy \
        python3 benchmarks/profile_qgemm_tc.py --n 28672 --k 8192 --m 16
"""

from __future__ import annotations

import argparse

import torch

import quantcore
from quantcore.nn.tc_layout import to_tc_layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=28672)
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--group", type=int, default=128)
    args = ap.parse_args()
    codes = torch.randint(0, 2**31 - 1, (args.n, args.k // 8), dtype=torch.int32, device="cuda")
    scales = torch.rand(args.n, args.k // args.group, device="cuda").half()
    tc = to_tc_layout(codes, scales, None)[:2]
    x = torch.randn(args.m, args.k, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        torch.ops.quantcore.qgemm_tc(x, *tc, None, None)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
