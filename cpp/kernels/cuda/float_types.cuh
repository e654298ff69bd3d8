// fp16 / bf16 / fp32 to and from float in device code, shared by the CUDA kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }

// Calls f(T{}) with T the device type of `t` (__half, __nv_bfloat16 or float), so
// a launcher instantiates its kernel template once per activation dtype.
template <typename F>
void dispatch_gpu_float(GpuFloat t, F&& f) {
  switch (t) {
    case GpuFloat::kF16: f(__half{}); break;
    case GpuFloat::kBF16: f(__nv_bfloat16{}); break;
    default: f(float{}); break;
  }
}

}  // namespace quantcore::kernels
