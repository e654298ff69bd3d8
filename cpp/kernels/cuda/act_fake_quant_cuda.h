// Dynamic per-token fake quantization on the GPU: cpp/kernels/act_fake_quant.h
// with the same arithmetic (identical values), one warp per row, input and
// output in their own dtype. Free of CUDA and torch headers.
#pragma once

#include <cstdint>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

struct ActFakeQuantCudaArgs {
  const void* x = nullptr;  // [rows, cols], `dtype`
  void* y = nullptr;        // [rows, cols], `dtype`
  int64_t rows = 0, cols = 0;
  int bits = 8;
  bool symmetric = true;
  GpuFloat dtype = GpuFloat::kF32;
};

// Returns a cudaError_t code (0 = ok).
int fake_quant_per_token_cuda(const ActFakeQuantCudaArgs& a, void* stream);

}  // namespace quantcore::kernels
