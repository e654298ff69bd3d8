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
// The scale and zero gradients are summed over each group in fp32, then
// multiplied by grad_factor (LSQ's gradient scale).
//
// Learnable grids (snap = true): the raw parameters are snapped before use, so
// that training sees exactly the grid a converted model stores: scales rounded
// to scale_type and raised to at least kMinLearnedScale (LSQ can push a scale
// to zero or below), zero points rounded half to even and clamped to
// [0, qmax]. The gradients pass straight through the snapping.
#pragma once

#include <cstdint>

#include <algorithm>

#include "float_convert.h"
#include "round_even.h"

namespace quantcore::kernels {

// fp16's smallest normal number: the floor of a learned scale.
constexpr float kMinLearnedScale = 6.103515625e-05f;

struct FakeQuantGrid {
  const float* scale = nullptr;  // [scale_rows, cols / group], positive unless snapped
  const float* zero = nullptr;   // same shape, integer-valued unless snapped; null: 2^(bits - 1)
  bool row_per_row = true;       // scale_rows == rows (else 1, shared)
  int64_t group = 0;             // columns per group; divides cols
  int bits = 4;                  // 2..8
  bool snap = false;             // learnable grid: snap scale and zero first (see above)
  ScaleType scale_type = ScaleType::kF32;
  float grad_factor = 1.f;
};

// The grid of one group as the kernels use it (after snapping).
struct GroupGridValue {
  float scale, zero;
};

static inline GroupGridValue group_grid_value(const FakeQuantGrid& grid, int64_t idx) {
  const float qmax = float((1 << grid.bits) - 1);
  float s = grid.scale[idx];
  float z = grid.zero ? grid.zero[idx] : float(1 << (grid.bits - 1));
  if (grid.snap) {
    s = std::max(round_to_scale_type(s, grid.scale_type), kMinLearnedScale);
    if (grid.zero) z = std::min(std::max(round_even(z), 0.f), qmax);
  }
  return {s, z};
}

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
