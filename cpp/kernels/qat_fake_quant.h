// Fake quantization for quantization-aware training: quantize then dequantize
// with given (learnable) scales and zero points, and its straight-through
// backward with the LSQ / LSQ+ gradients of the scale and zero point.
//
// x is row-major [rows, cols]; column c of row r uses the grid of group
// g = c / group: scale[sr, g] and zero[sr, g], where sr = r when the grid has
// one row of scales per row of x, else 0 (one row shared by all rows, e.g. a
// per-tensor grid). Codes are unsigned, 0 .. qmax = 2^bits - 1:
//   q = clamp(round_half_even(x / s) + z, 0, qmax),   y = (q - z) * s
// the same arithmetic as rtn_quantize_rows followed by dequantization, so
// identical scales and zero points give identical values.
//
// Backward (round treated as the identity, clamping not): with v = x / s and
// inside = (0 <= round(v) + z <= qmax),
//   dy/dx = inside,   dy/ds = inside ? round(v) - v : q - z,   dy/dz = inside ? 0 : -s.
// The scale and zero gradients are summed over each group in fp32; the LSQ
// gradient scale is the caller's to apply.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

struct FakeQuantGrid {
  const float* scale = nullptr;  // [scale_rows, cols / group], positive
  const float* zero = nullptr;   // same shape, integer-valued; null: 2^(bits - 1) (symmetric)
  bool row_per_row = true;       // scale_rows == rows (else 1, shared)
  int64_t group = 0;             // columns per group; divides cols
  int bits = 4;                  // 2..8
};

// Rows [row_begin, row_end) of y = fake_quant(x).
void qat_fake_quant_rows(const float* x, int64_t cols, const FakeQuantGrid& grid, float* y, int64_t row_begin,
                         int64_t row_end);

// Rows [row_begin, row_end) of the backward: grad_x [rows, cols]; the scale
// and zero gradients of each (row, group) go to grad_scale / grad_zero
// [rows, cols / group] (per row of x, whatever the grid's rows: the caller
// sums them over rows for a shared grid). grad_zero may be null.
void qat_fake_quant_backward_rows(const float* grad_y, const float* x, int64_t cols, const FakeQuantGrid& grid,
                                  float* grad_x, float* grad_scale, float* grad_zero, int64_t row_begin,
                                  int64_t row_end);

}  // namespace quantcore::kernels
