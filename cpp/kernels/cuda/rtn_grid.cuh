// RTN's grid of one group in device code, with the CPU kernel's arithmetic
// (cpp/kernels/rtn.cpp: IEEE float ops, scale rounded to its storage dtype,
// zero point rounded half to even), shared by the CUDA RTN, QAT and per-token
// fake-quant kernels so they all agree with the CPU to the bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

struct RtnGrid {
  float scale;
  float zero;
};

__device__ __forceinline__ float round_scale(float v, GpuFloat t) {
  if (t == GpuFloat::kF16) return __half2float(__float2half_rn(v));
  if (t == GpuFloat::kBF16) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

__device__ __forceinline__ float min_positive_scale(GpuFloat t) {
  return t == GpuFloat::kF16 ? 5.9604645e-08f : FLT_TRUE_MIN * 2;
}

// The min/max grid of values in [lo, hi]; *overflow is set when the scale does
// not fit its dtype.
__device__ __forceinline__ RtnGrid make_rtn_grid(float lo, float hi, int bits, bool symmetric, GpuFloat scale_type,
                                                 bool* overflow) {
  const int maxq = (1 << bits) - 1;
  RtnGrid g;
  if (symmetric) {
    const float amax = fmaxf(fabsf(lo), fabsf(hi));
    g.scale = amax > 0.f ? __fdiv_rn(__fmul_rn(2.f, amax), float(maxq)) : 1.f;
    g.zero = float((maxq + 1) / 2);
  } else {
    lo = fminf(lo, 0.f);
    hi = fmaxf(hi, 0.f);
    g.scale = hi > lo ? __fdiv_rn(__fsub_rn(hi, lo), float(maxq)) : 1.f;
  }
  g.scale = round_scale(g.scale, scale_type);
  if (!isfinite(g.scale)) *overflow = true;
  if (!(g.scale > 0.f)) g.scale = min_positive_scale(scale_type);
  if (!symmetric) g.zero = fminf(fmaxf(rintf(__fdiv_rn(-lo, g.scale)), 0.f), float(maxq));
  return g;
}

// The code of w: clamp(round_half_even(w / s) + z, 0, maxq).
__device__ __forceinline__ float rtn_code(float w, const RtnGrid& g, float maxq) {
  return fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(w, g.scale)), g.zero), 0.f), maxq);
}

}  // namespace quantcore::kernels
