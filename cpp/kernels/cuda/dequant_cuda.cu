// Dequantization for widths that divide 32 (2, 4, 8 bits): no code straddles
// two words.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "dequant_cuda.h"
#include "float_types.cuh"

namespace quantcore::kernels {

namespace {

// One thread per 32-bit word: its 32 / bits codes share one group (the group
// size is a multiple of 32 / bits), so one scale and zero load each.
template <typename ScaleT, typename OutT, int BITS>
__global__ void dequant_kernel(DequantArgs a) {
  constexpr int kCodes = 32 / BITS;
  const int64_t words_per_row = a.K / kCodes;
  const int64_t word = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (word >= a.N * words_per_row) return;
  const int64_t row = word / words_per_row, col0 = (word % words_per_row) * kCodes;
  const int64_t g = row * (a.K / a.group_size) + col0 / a.group_size;
  const float s = to_float<ScaleT>(reinterpret_cast<const ScaleT*>(a.scales)[g]);
  const float z = a.zeros ? float(a.zeros[g]) : float(1 << (BITS - 1));
  const uint32_t q = uint32_t(__ldg(a.qweight + word));
  OutT v[kCodes];
#pragma unroll
  for (int j = 0; j < kCodes; ++j) {
    v[j] = from_float<OutT>((float((q >> (BITS * j)) & ((1u << BITS) - 1u)) - z) * s);
  }
  // The word's outputs are consecutive and aligned to their size (K is a
  // multiple of 32 / bits): store them as 8- or 16-byte vectors.
  OutT* out = reinterpret_cast<OutT*>(a.out) + row * a.K + col0;
  if constexpr (sizeof(v) % 16 == 0) {
#pragma unroll
    for (int i = 0; i < int(sizeof(v) / 16); ++i) reinterpret_cast<uint4*>(out)[i] = reinterpret_cast<const uint4*>(v)[i];
  } else if constexpr (sizeof(v) % 8 == 0) {
#pragma unroll
    for (int i = 0; i < int(sizeof(v) / 8); ++i) reinterpret_cast<uint2*>(out)[i] = reinterpret_cast<const uint2*>(v)[i];
  } else {
#pragma unroll
    for (int j = 0; j < kCodes; ++j) out[j] = v[j];
  }
}

template <typename ScaleT, typename OutT>
cudaError_t launch_bits(const DequantArgs& a, cudaStream_t s) {
  const int64_t words = a.N * a.K * a.bits / 32;
  const dim3 block(256), grid(unsigned((words + 255) / 256));
  switch (a.bits) {
    case 2: dequant_kernel<ScaleT, OutT, 2><<<grid, block, 0, s>>>(a); break;
    case 4: dequant_kernel<ScaleT, OutT, 4><<<grid, block, 0, s>>>(a); break;
    default: dequant_kernel<ScaleT, OutT, 8><<<grid, block, 0, s>>>(a); break;
  }
  return cudaGetLastError();
}

template <typename ScaleT>
cudaError_t launch(const DequantArgs& a, cudaStream_t s) {
  switch (a.out_type) {
    case GpuFloat::kF16: return launch_bits<ScaleT, __half>(a, s);
    case GpuFloat::kBF16: return launch_bits<ScaleT, __nv_bfloat16>(a, s);
    default: return launch_bits<ScaleT, float>(a, s);
  }
}

}  // namespace

int dequant_cuda(const DequantArgs& a, void* stream) {
  if ((a.bits != 2 && a.bits != 4 && a.bits != 8) || (a.K * a.bits) % 32 || a.group_size <= 0 ||
      a.K % a.group_size || a.group_size % (32 / a.bits))
    return int(cudaErrorInvalidValue);
  if (a.N == 0 || a.K == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a.scale) {
    case GpuFloat::kF16: return int(launch<__half>(a, s));
    case GpuFloat::kBF16: return int(launch<__nv_bfloat16>(a, s));
    default: return int(launch<float>(a, s));
  }
}

}  // namespace quantcore::kernels
