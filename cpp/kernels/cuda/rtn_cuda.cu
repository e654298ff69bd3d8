// RTN on the GPU: one warp per group. The warp finds the group's min and max,
// builds the grid exactly as rtn.cpp does (rtn_grid.cuh), optionally
// scores the shrunken candidate grids by squared error (warp-reduced), then
// writes the codes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>

#include "rtn_cuda.h"
#include "rtn_grid.cuh"

namespace quantcore::kernels {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

using Grid = RtnGrid;

__device__ __forceinline__ Grid make_grid(float lo, float hi, const RtnCudaArgs& a, bool* overflow) {
  return make_rtn_grid(lo, hi, a.bits, a.symmetric, a.scale, overflow);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void __launch_bounds__(kWarp* kWarpsPerBlock) rtn_kernel(RtnCudaArgs a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t groups_per_row = a.cols / a.group_size;
  const int64_t group = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (group >= a.rows * groups_per_row) return;
  const int64_t row = group / groups_per_row, g = group % groups_per_row;
  const float* w = a.w + row * a.cols + g * a.group_size;
  const int64_t n = a.group_size;
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int64_t i = lane; i < n; i += kWarp) {
    lo = fminf(lo, w[i]);
    hi = fmaxf(hi, w[i]);
  }
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  const float maxq = float((1 << a.bits) - 1);
  bool overflow = false;
  Grid best = make_grid(lo, hi, a, &overflow);
  if (a.mse_clip) {
    auto sq_error = [&](const Grid& c) {
      float err = 0.f;
      for (int64_t i = lane; i < n; i += kWarp) {
        const float d = (rtn_code(w[i], c, maxq) - c.zero) * c.scale - w[i];
        err = fmaf(d, d, err);
      }
      return warp_sum(err);
    };
    float best_err = sq_error(best);
    const int steps = int(float(a.clip_grid) * a.clip_max_shrink);
    for (int i = 1; i <= steps; ++i) {
      const float ratio = 1.f - float(i) / float(a.clip_grid);
      const Grid cand = make_grid(lo * ratio, hi * ratio, a, &overflow);
      const float err = sq_error(cand);
      if (err < best_err) {  // the same value on every lane: a uniform branch
        best_err = err;
        best = cand;
      }
    }
  }
  uint8_t* q = a.codes + row * a.cols + g * a.group_size;
  for (int64_t i = lane; i < n; i += kWarp) q[i] = uint8_t(rtn_code(w[i], best, maxq));
  if (lane == 0) {
    a.scales[group] = best.scale;
    a.zeros[group] = uint8_t(best.zero);
    if (overflow) atomicExch(a.status, 1);
  }
}

}  // namespace

int rtn_quantize_cuda(const RtnCudaArgs& a, void* stream) {
  if (a.bits < 2 || a.bits > 8 || a.group_size <= 0 || a.cols % a.group_size || a.status == nullptr)
    return int(cudaErrorInvalidValue);
  const int64_t groups = a.rows * (a.cols / a.group_size);
  if (groups == 0) return 0;
  const unsigned blocks = unsigned((groups + kWarpsPerBlock - 1) / kWarpsPerBlock);
  rtn_kernel<<<blocks, kWarp * kWarpsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return int(cudaGetLastError());
}

}  // namespace quantcore::kernels
