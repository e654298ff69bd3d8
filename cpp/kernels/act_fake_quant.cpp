#include "act_fake_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "rtn.h"
#include "round_even.h"

namespace quantcore::kernels {

void fake_quant_per_token_rows(const float* x, int64_t cols, int bits, bool symmetric, float* y, int64_t row_begin,
                               int64_t row_end) {
  RtnParams p;
  p.bits = bits;
  p.symmetric = symmetric;
  p.group_size = cols;
  p.scale_type = ScaleType::kF32;
  const float qmax = float((1 << bits) - 1);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    if (!std::all_of(xr, xr + cols, [](float v) { return std::isfinite(v); })) {
      std::fill(yr, yr + cols, std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    float scale;
    int zero_int;
    rtn_group_grid(xr, cols, p, &scale, &zero_int);
    const float zero = float(zero_int);
    for (int64_t i = 0; i < cols; ++i) {
      const float q = std::min(std::max(round_even(xr[i] / scale) + zero, 0.f), qmax);
      yr[i] = (q - zero) * scale;
    }
  }
}

}  // namespace quantcore::kernels
