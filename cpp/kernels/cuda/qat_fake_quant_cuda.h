// QAT fake quantization on the GPU: the forward and straight-through / LSQ
// backward of cpp/kernels/qat_fake_quant.h, same arithmetic (snapping of
// learnable grids included), one warp per (row, group). Free of CUDA and torch
// headers.
#pragma once

#include <cstdint>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

struct QatFakeQuantCudaArgs {
  const void* x = nullptr;        // [rows, cols], `dtype`
  const float* scale = nullptr;   // [rows or 1, cols / group]
  const float* zero = nullptr;    // same shape, or null (2^(bits - 1))
  bool row_per_row = true;
  int64_t rows = 0, cols = 0, group = 0;
  int bits = 4;
  GpuFloat dtype = GpuFloat::kF32;  // of x, y, grad_y, grad_x; the math is fp32
  // A learnable grid, snapped before use as in qat_fake_quant.h: scales rounded
  // to scale_type and floored at kMinLearnedScale, zeros rounded and clamped.
  bool snap = false;
  GpuFloat scale_type = GpuFloat::kF32;
  float grad_factor = 1.f;        // multiplies grad_scale and grad_zero
  void* y = nullptr;              // forward: [rows, cols], `dtype`
  const void* grad_y = nullptr;   // backward inputs / outputs, `dtype`:
  void* grad_x = nullptr;         // [rows, cols], `dtype`
  float* grad_scale = nullptr;    // [rows, cols / group] (per row of x)
  float* grad_zero = nullptr;     // [rows, cols / group] or null
};

// Return cudaError_t codes (0 = ok).
int qat_fake_quant_cuda(const QatFakeQuantCudaArgs& a, void* stream);
int qat_fake_quant_backward_cuda(const QatFakeQuantCudaArgs& a, void* stream);

}  // namespace quantcore::kernels
