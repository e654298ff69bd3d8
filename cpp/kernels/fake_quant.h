// Group-wise quantize-then-dequantize ("fake quantization") of a row-major
// float matrix, with an optional per-column pre-scale and per-group clip.
//
// For row r, group g and column c (s = col_scale, m = group_clip):
//   v      = clamp(w[r,c] * s[c], -m[r,g], m[r,g])
//   grid   = RTN grid of the group's v (cpp/kernels/rtn.h, the same rules)
//   out    = dequant(quant(v)) / s[c]
// Quantizing the scaled, clamped matrix with rtn_quantize_rows gives exactly
// the codes this dequantizes, so a search built on it (AWQ's scale and clip
// searches) scores the weights that are finally stored.
#pragma once

#include <cstdint>

#include "rtn.h"

namespace quantcore::kernels {

// Rows [row_begin, row_end) of w (rows x cols). col_scale ([cols], positive)
// and group_clip ([rows, cols / group_size], >= 0) may be null.
void fake_quantize_rows(const float* w, int64_t cols, const RtnParams& p, const float* col_scale,
                        const float* group_clip, float* out, int64_t row_begin, int64_t row_end);

}  // namespace quantcore::kernels
