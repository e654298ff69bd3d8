#include "qat_fake_quant.h"

#include <algorithm>

#include "round_even.h"

namespace quantcore::kernels {

namespace {

struct GroupGridView {
  float scale, zero;
};

inline GroupGridView grid_at(const FakeQuantGrid& g, int64_t row, int64_t group, int64_t groups) {
  const int64_t idx = (g.row_per_row ? row : 0) * groups + group;
  return {g.scale[idx], g.zero ? g.zero[idx] : float(1 << (g.bits - 1))};
}

}  // namespace

void qat_fake_quant_rows(const float* x, int64_t cols, const FakeQuantGrid& grid, float* y, int64_t row_begin,
                         int64_t row_end) {
  const float qmax = float((1 << grid.bits) - 1);
  const int64_t groups = cols / grid.group;
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const GroupGridView gg = grid_at(grid, r, g, groups);
      const float* xg = x + r * cols + g * grid.group;
      float* yg = y + r * cols + g * grid.group;
      for (int64_t i = 0; i < grid.group; ++i) {
        const float q = std::min(std::max(round_even(xg[i] / gg.scale) + gg.zero, 0.f), qmax);
        yg[i] = (q - gg.zero) * gg.scale;
      }
    }
  }
}

void qat_fake_quant_backward_rows(const float* grad_y, const float* x, int64_t cols, const FakeQuantGrid& grid,
                                  float* grad_x, float* grad_scale, float* grad_zero, int64_t row_begin,
                                  int64_t row_end) {
  const float qmax = float((1 << grid.bits) - 1);
  const int64_t groups = cols / grid.group;
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const GroupGridView gg = grid_at(grid, r, g, groups);
      const int64_t off = r * cols + g * grid.group;
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
      grad_scale[r * groups + g] = ds;
      if (grad_zero) grad_zero[r * groups + g] = dz;
    }
  }
}

}  // namespace quantcore::kernels
