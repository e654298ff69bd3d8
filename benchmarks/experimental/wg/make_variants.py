"""Writes experimental variants of the wgmma kernel file for the harness.

    python3 benchmarks/experimental/wg/make_variants.py OUTDIR

Each variant is cpp/kernels/cuda/qgemm_wg_cuda.cu with one change, written to
OUTDIR/qgemm_wg_<name>.cu; run_gemv_check.sh builds wg_harness.cu against each
and times it beside the tree's kernel. Variants (fails loudly when the kernel
no longer has the code a variant rewrites):

* b2: two K tiles per wgmma batch, one wgmma wait per pair instead of per
  tile (twice the A-fragment registers: 127 at 16 rows, 215 at 64, 253 at
  128, no spills with CUDA 13).
"""

from __future__ import annotations

import sys
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[3] / "cpp/kernels/cuda/qgemm_wg_cuda.cu"

LOOP_START = "#pragma unroll\n    for (int i = 0; i < D; ++i) {\n      if (base + i >= n_tiles) break;"
LOOP_END = "  wgmma_wait<0>();\n#pragma unroll\n  for (int np = 0; np < 2; ++np)\n#pragma unroll\n    for (int i = 0; i < NACC; ++i) fence_operand"

B2_LOOP = """#pragma unroll
    for (int i = 0; i < D; i += 2) {  // VARIANT b2: two K tiles per wgmma batch
      if (base + i >= n_tiles) break;
      const int tt0 = i % ST;
      if (tt0 == 0) {
        cp_async_wait<S - 2>();
        __syncthreads();
        if (st + S - 1 < n_stages) copy_stage(st + S - 1);
        cp_async_commit();
      }
      const St& cs = stages[st % S];
      uint32_t af[2][2][2][4];  // [u][np][ks]
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int tt = tt0 + u;
        const uint32_t q[4] = {cur[i + u].x, cur[i + u].y, cur[i + u].z, cur[i + u].w};
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          const int nl = n_mine + 16 * np;
          const H2 s_lo = splat<T>(to_float<ScaleT>(cs.scales[tt][nl]));
          const H2 s_hi = splat<T>(to_float<ScaleT>(cs.scales[tt][nl + 8]));
          H2 off_lo = off_sym, off_hi = off_sym;
          if constexpr (ASYM) {
            off_lo = splat<T>(Dequant<T>::kMagic + float(cs.zeros[tt][nl]));
            off_hi = splat<T>(Dequant<T>::kMagic + float(cs.zeros[tt][nl + 8]));
          }
#pragma unroll
          for (int ks = 0; ks < 2; ++ks) {
            uint32_t b[4];
            Dequant<T>::run(q[2 * ks + np], off_lo, off_hi, b);
            af[u][np][ks][0] = as_u32(__hmul2(from_u32<H2>(b[0]), s_lo));
            af[u][np][ks][1] = as_u32(__hmul2(from_u32<H2>(b[2]), s_hi));
            af[u][np][ks][2] = as_u32(__hmul2(from_u32<H2>(b[1]), s_lo));
            af[u][np][ks][3] = as_u32(__hmul2(from_u32<H2>(b[3]), s_hi));
          }
        }
      }
      wgmma_fence();
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
          const int kin = (tt0 + u) * kTileK + ks * 16;
          const uint32_t xs = smem_addr(&cs.x[kin / 64][0][0]) + (kin % 64) * 2;
#pragma unroll
          for (int np = 0; np < 2; ++np) Wgmma<T, BN>::run(acc[np], af[u][np][ks], make_sw128_desc(xs));
        }
      wgmma_commit();
      wgmma_wait<0>();
      if (tt0 + 1 == ST - 1) ++st;
    }
  }
"""


def b2(src: str) -> str:
    start, end = src.index(LOOP_START), src.index(LOOP_END)
    return src[:start] + B2_LOOP + src[end:]


VARIANTS = {"b2": b2}


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    src = KERNEL.read_text()
    for name, make in VARIANTS.items():
        (out / f"qgemm_wg_{name}.cu").write_text(make(src))
        print(out / f"qgemm_wg_{name}.cu")


if __name__ == "__main__":
    main()
