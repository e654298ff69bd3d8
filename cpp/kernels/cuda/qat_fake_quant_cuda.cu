// One warp per (row, group); lanes stride over the group's columns. The
// rounding (half to even, rintf) and the IEEE division match the CPU kernel,
// so both devices give identical forward values.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "float_types.cuh"
#include "qat_fake_quant_cuda.h"
#include "rtn_grid.cuh"

namespace quantcore::kernels {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

// fp16's smallest normal number, the floor of a learned scale (kMinLearnedScale).
constexpr float kMinLearnedScale = 6.103515625e-05f;

__device__ __forceinline__ RtnGrid grid_at(const QatFakeQuantCudaArgs& a, int64_t row, int64_t g, int64_t groups) {
  const int64_t idx = (a.row_per_row ? row : 0) * groups + g;
  float s = a.scale[idx];
  float z = a.zero ? a.zero[idx] : float(1 << (a.bits - 1));
  if (a.snap) {
    s = fmaxf(round_scale(s, a.scale_type), kMinLearnedScale);
    if (a.zero) z = fminf(fmaxf(rintf(z), 0.f), float((1 << a.bits) - 1));
  }
  return {s, z};
}

// The (row, group) this warp handles: its index in [rows, groups], the offset
// of its first value, its grid; item < 0 past the end.
struct WarpGroup {
  int64_t item, off;
  RtnGrid grid;
  int lane;
  float qmax;
};

__device__ __forceinline__ WarpGroup warp_group(const QatFakeQuantCudaArgs& a) {
  WarpGroup w;
  w.lane = threadIdx.x % kWarp;
  const int64_t groups = a.cols / a.group;
  w.item = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (w.item >= a.rows * groups) {
    w.item = -1;
    return w;
  }
  const int64_t row = w.item / groups, g = w.item % groups;
  w.grid = grid_at(a, row, g, groups);
  w.qmax = float((1 << a.bits) - 1);
  w.off = row * a.cols + g * a.group;
  return w;
}

// Inputs and outputs in their own dtype (no fp32 copies of a bf16 weight):
// the math is fp32, so values equal the CPU kernel's on the fp32-converted input.
template <typename T>
__global__ void forward_kernel(QatFakeQuantCudaArgs a) {
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const WarpGroup w = warp_group(a);
  if (w.item < 0) return;
  const RtnGrid& gg = w.grid;
  const int64_t off = w.off;
  const float qmax = w.qmax;
  for (int64_t i = w.lane; i < a.group; i += kWarp) {
    const float q = rtn_code(to_float<T>(x[off + i]), gg, qmax);
    y[off + i] = from_float<T>(__fmul_rn(__fsub_rn(q, gg.zero), gg.scale));
  }
}

template <typename T>
__global__ void backward_kernel(QatFakeQuantCudaArgs a) {
  const T* x = static_cast<const T*>(a.x);
  const T* grad_y = static_cast<const T*>(a.grad_y);
  T* grad_x = static_cast<T*>(a.grad_x);
  const WarpGroup w = warp_group(a);
  if (w.item < 0) return;
  const RtnGrid& gg = w.grid;
  const int64_t off = w.off;
  const float qmax = w.qmax;
  float ds = 0.f, dz = 0.f;
  for (int64_t i = w.lane; i < a.group; i += kWarp) {
    const float gy = to_float<T>(grad_y[off + i]);
    const float v = __fdiv_rn(to_float<T>(x[off + i]), gg.scale);
    const float rv = rintf(v);
    const float q = __fadd_rn(rv, gg.zero);
    if (q >= 0.f && q <= qmax) {
      grad_x[off + i] = grad_y[off + i];
      ds += gy * (rv - v);
    } else {
      grad_x[off + i] = from_float<T>(0.f);
      ds += gy * ((q < 0.f ? 0.f : qmax) - gg.zero);
      dz -= gy * gg.scale;
    }
  }
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    ds += __shfl_xor_sync(0xffffffffu, ds, o);
    dz += __shfl_xor_sync(0xffffffffu, dz, o);
  }
  if (w.lane == 0) {
    a.grad_scale[w.item] = ds * a.grad_factor;
    if (a.grad_zero) a.grad_zero[w.item] = dz * a.grad_factor;
  }
}

bool valid(const QatFakeQuantCudaArgs& a) {
  return a.bits >= 2 && a.bits <= 8 && a.group > 0 && a.cols % a.group == 0 && a.x && a.scale;
}

unsigned blocks(const QatFakeQuantCudaArgs& a) {
  return unsigned((a.rows * (a.cols / a.group) + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

int qat_fake_quant_cuda(const QatFakeQuantCudaArgs& a, void* stream) {
  if (!valid(a) || !a.y) return int(cudaErrorInvalidValue);
  if (a.rows * a.cols == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_gpu_float(a.dtype, [&](auto t) {
    forward_kernel<decltype(t)><<<blocks(a), kWarp * kWarpsPerBlock, 0, s>>>(a);
  });
  return int(cudaGetLastError());
}

int qat_fake_quant_backward_cuda(const QatFakeQuantCudaArgs& a, void* stream) {
  if (!valid(a) || !a.grad_y || !a.grad_x || !a.grad_scale) return int(cudaErrorInvalidValue);
  if (a.rows * a.cols == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_gpu_float(a.dtype, [&](auto t) {
    backward_kernel<decltype(t)><<<blocks(a), kWarp * kWarpsPerBlock, 0, s>>>(a);
  });
  return int(cudaGetLastError());
}

}  // namespace quantcore::kernels
