// Round-to-nearest quantization on the GPU, with the CPU kernel's rules
// (cpp/kernels/rtn.h): same grids, same rounding (half to even), same codes;
// with the MSE clip search, a candidate whose error ties the best one's to the
// last bit may win on one device and not the other (the sums run in a
// different order). Free of CUDA and torch headers.
#pragma once

#include <cstdint>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

struct RtnCudaArgs {
  const float* w = nullptr;   // [rows, cols], row-major
  uint8_t* codes = nullptr;   // [rows, cols]
  float* scales = nullptr;    // [rows, cols / group_size], rounded to `scale`
  uint8_t* zeros = nullptr;   // [rows, cols / group_size]
  int* status = nullptr;      // one int, zeroed; set to 1 when a scale overflows its dtype
  int64_t rows = 0, cols = 0, group_size = 0;
  int bits = 4;
  bool symmetric = true;
  bool mse_clip = false;
  int clip_grid = 100;
  float clip_max_shrink = 0.8f;
  GpuFloat scale = GpuFloat::kF32;  // storage dtype the scales are rounded to
};

// Launches on `stream` (a cudaStream_t); returns a cudaError_t code (0 = ok).
int rtn_quantize_cuda(const RtnCudaArgs& args, void* stream);

}  // namespace quantcore::kernels
