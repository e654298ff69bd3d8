#include "qat_fake_quant.h"

#include <algorithm>

namespace quantcore::kernels {

namespace {

// Calls f(group grid, offset of the group's first value, index of the group in
// [rows, groups]) for every group of rows [row_begin, row_end).
template <typename F>
void for_each_group(const FakeQuantGrid& grid, int64_t cols, int64_t row_begin, int64_t row_end, F&& f) {
  const int64_t groups = cols / grid.group;
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t g = 0; g < groups; ++g)
      f(group_grid_value(grid, (grid.row_per_row ? r : 0) * groups + g), r * cols + g * grid.group, r * groups + g);
}

}  // namespace

void qat_fake_quant_rows(const float* x, int64_t cols, const FakeQuantGrid& grid, float* y, int64_t row_begin,
                         int64_t row_end) {
  const float qmax = float((1 << grid.bits) - 1);
  for_each_group(grid, cols, row_begin, row_end, [&](const GroupGridValue& gg, int64_t off, int64_t) {
    for (int64_t i = 0; i < grid.group; ++i) {
      const float q = std::min(std::max(round_even(x[off + i] / gg.scale) + gg.zero, 0.f), qmax);
      y[off + i] = (q - gg.zero) * gg.scale;
    }
  });
}

void qat_fake_quant_backward_rows(const float* grad_y, const float* x, int64_t cols, const FakeQuantGrid& grid,
                                  float* grad_x, float* grad_scale, float* grad_zero, int64_t row_begin,
                                  int64_t row_end) {
  const float qmax = float((1 << grid.bits) - 1);
  for_each_group(grid, cols, row_begin, row_end, [&](const GroupGridValue& gg, int64_t off, int64_t group_index) {
    float ds = 0.f, dz = 0.f;
    for (int64_t i = 0; i < grid.group; ++i) {
      const float gy = grad_y[off + i];
      const float v = x[off + i] / gg.scale;
      const float rv = round_even(v);
      const float q = rv + gg.zero;
      if (q >= 0.f && q <= qmax) {
        grad_x[off + i] = gy;
        ds += gy * (rv - v);
      } else {
        grad_x[off + i] = 0.f;
        const float qc = q < 0.f ? 0.f : qmax;
        ds += gy * (qc - gg.zero);
        dz -= gy * gg.scale;
      }
    }
    grad_scale[group_index] = ds * grid.grad_factor;
    if (grad_zero) grad_zero[group_index] = dz * grid.grad_factor;
  });
}

}  // namespace quantcore::kernels
