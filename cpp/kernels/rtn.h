// Round-to-nearest (RTN) quantization of a row-major float matrix.
//
// Each row is split into groups of `group_size` consecutive values; every group
// gets one scale s and one integer zero point z, and a value w becomes the code
//   q = clamp(round_half_even(w / s) + z, 0, 2^bits - 1),   dequantized (q - z) * s.
// Symmetric: s = 2*max|w| / (2^bits - 1), z = 2^(bits-1) (the GPTQ convention).
// Asymmetric: the range [min(w,0), max(w,0)] maps onto [0, 2^bits - 1].
// With mse_clip, the range is shrunk by the ratio (grid of clip_grid steps down
// to 1 - clip_max_shrink) that minimises the group's squared error; ratio 1 is
// always a candidate, so the error never exceeds plain min/max.
#pragma once

#include <cstdint>

#include "float_convert.h"

namespace quantcore::kernels {

struct RtnParams {
  int bits = 4;
  bool symmetric = true;
  int64_t group_size = 128;  // must divide the row length
  bool mse_clip = false;
  int clip_grid = 100;
  float clip_max_shrink = 0.8f;
  ScaleType scale_type = ScaleType::kF32;
};

// Throws KernelError when the parameters are unusable for rows of `cols` values.
void rtn_validate(const RtnParams& p, int64_t cols);

// The grid of one group of n values (min/max rule, then the optional MSE clip
// search): scale already rounded to p.scale_type, integer zero point. GPTQ uses
// it for the groups it quantizes column by column.
void rtn_group_grid(const float* w, int64_t n, const RtnParams& p, float* scale, int* zero);

// Quantizes rows [row_begin, row_end) of w (rows x cols). Outputs, indexed by
// row: codes (cols per row), scales and zeros (cols / group_size per row).
// Scales are written already rounded to p.scale_type.
void rtn_quantize_rows(const float* w, int64_t cols, const RtnParams& p, uint8_t* codes,
                       float* scales, uint8_t* zeros, int64_t row_begin, int64_t row_end);

}  // namespace quantcore::kernels
