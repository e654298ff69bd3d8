// One warp per row: the warp finds the row's min, max and whether it holds a
// non-finite value, builds RTN's grid (rtn_grid.cuh, fp32 scale) and writes
// the quantized-dequantized row; the second pass reads the row from cache.
#include <cuda_runtime.h>

#include <cfloat>

#include "act_fake_quant_cuda.h"
#include "float_types.cuh"
#include "rtn_grid.cuh"

namespace quantcore::kernels {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

template <typename T>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock) per_token_kernel(ActFakeQuantCudaArgs a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= a.rows) return;
  const T* x = static_cast<const T*>(a.x) + row * a.cols;
  T* y = static_cast<T*>(a.y) + row * a.cols;
  float lo = FLT_MAX, hi = -FLT_MAX;
  bool finite = true;
  for (int64_t i = lane; i < a.cols; i += kWarp) {
    const float v = to_float<T>(x[i]);
    finite = finite && isfinite(v);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (!__all_sync(0xffffffffu, finite)) {  // the CPU kernel's rule: the whole row becomes NaN
    for (int64_t i = lane; i < a.cols; i += kWarp) y[i] = from_float<T>(__int_as_float(0x7fc00000));
    return;
  }
  bool overflow = false;  // fp32 scales of finite values cannot overflow
  const RtnGrid g = make_rtn_grid(lo, hi, a.bits, a.symmetric, GpuFloat::kF32, &overflow);
  const float maxq = float((1 << a.bits) - 1);
  for (int64_t i = lane; i < a.cols; i += kWarp)
    y[i] = from_float<T>(__fmul_rn(__fsub_rn(rtn_code(to_float<T>(x[i]), g, maxq), g.zero), g.scale));
}

}  // namespace

int fake_quant_per_token_cuda(const ActFakeQuantCudaArgs& a, void* stream) {
  if (a.bits < 2 || a.bits > 8 || a.cols <= 0 || !a.x || !a.y) return int(cudaErrorInvalidValue);
  if (a.rows == 0) return 0;
  const unsigned blocks = unsigned((a.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_gpu_float(a.dtype, [&](auto t) {
    per_token_kernel<decltype(t)><<<blocks, kWarp * kWarpsPerBlock, 0, s>>>(a);
  });
  return int(cudaGetLastError());
}

}  // namespace quantcore::kernels
