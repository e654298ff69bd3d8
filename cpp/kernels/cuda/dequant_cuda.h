// Dequantization of canonical packed weights on the GPU into fp16/bf16 [N, K]:
// the path for batches too large for the GEMV (a dense GEMM then follows).
// Free of CUDA and torch headers.
#pragma once

#include <cstdint>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

struct DequantArgs {
  const int32_t* qweight = nullptr;  // [N, K * bits / 32]
  const void* scales = nullptr;      // [N, K / group_size]
  const uint8_t* zeros = nullptr;    // or null (symmetric)
  void* out = nullptr;               // [N, K], out type
  int64_t N = 0, K = 0;
  int bits = 4;                      // 2, 4 or 8
  int64_t group_size = 128;
  GpuFloat scale = GpuFloat::kF16;
  GpuFloat out_type = GpuFloat::kF16;  // kF16, kBF16 or kF32
};

int dequant_cuda(const DequantArgs& a, void* stream);

}  // namespace quantcore::kernels
