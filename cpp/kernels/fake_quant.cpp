#include "fake_quant.h"

#include <algorithm>
#include <vector>

#include "round_even.h"

namespace quantcore::kernels {

void fake_quantize_rows(const float* w, int64_t cols, const RtnParams& p, const float* col_scale,
                        const float* group_clip, float* out, int64_t row_begin, int64_t row_end) {
  const int64_t gs = p.group_size;
  const int64_t groups = cols / gs;
  const float maxq = float((1 << p.bits) - 1);
  std::vector<float> v(static_cast<size_t>(gs));  // the group after scaling and clamping
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* wg = w + r * cols + g * gs;
      const float* sg = col_scale ? col_scale + g * gs : nullptr;
      for (int64_t i = 0; i < gs; ++i) v[size_t(i)] = sg ? wg[i] * sg[i] : wg[i];
      if (group_clip) {
        const float m = group_clip[r * groups + g];
        for (int64_t i = 0; i < gs; ++i) v[size_t(i)] = std::min(std::max(v[size_t(i)], -m), m);
      }
      float scale = 1.f;
      int zero = 0;
      rtn_group_grid(v.data(), gs, p, &scale, &zero);
      const float z = float(zero);
      float* og = out + r * cols + g * gs;
      for (int64_t i = 0; i < gs; ++i) {
        // The same expression as RTN's quantizer, so the codes agree exactly.
        const float q = std::min(std::max(round_even(v[size_t(i)] / scale) + z, 0.f), maxq);
        const float d = (q - z) * scale;
        og[i] = sg ? d / sg[i] : d;
      }
    }
  }
}

}  // namespace quantcore::kernels
