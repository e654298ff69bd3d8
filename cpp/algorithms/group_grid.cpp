#include "group_grid.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <limits>

namespace quantcore::algorithms {

Grid make_grid(const at::Tensor& lo_in, const at::Tensor& hi_in, const GridSpec& spec) {
  const double maxq = double((1 << spec.bits) - 1);
  at::Tensor scale, zero, lo = lo_in, hi = hi_in;
  if (spec.symmetric) {
    at::Tensor amax = at::maximum(lo.abs(), hi.abs());
    scale = at::where(amax > 0, amax * 2 / maxq, at::ones_like(amax));
  } else {
    lo = lo.clamp_max(0);
    hi = hi.clamp_min(0);
    scale = at::where(hi > lo, (hi - lo) / maxq, at::ones_like(hi));
  }
  scale = scale.to(spec.scale_dtype).to(at::kFloat);
  TORCH_CHECK_VALUE(at::isfinite(scale).all().item<bool>(),
                    "a group's scale overflows the scale dtype; use float32 or bfloat16 scales");
  // The floor RTN's kernel uses for scales that underflow the storage dtype.
  const double tiny =
      spec.scale_dtype == at::kHalf ? 5.9604645e-08 : 2.0 * std::numeric_limits<float>::denorm_min();
  scale = at::where(scale > 0, scale, at::full_like(scale, tiny));
  if (spec.symmetric)
    zero = at::full_like(scale, double((1 << spec.bits) / 2));
  else
    zero = at::round(-lo / scale).clamp(0, maxq);
  return {scale.unsqueeze(-1), zero.unsqueeze(-1)};
}

at::Tensor quantize_codes(const at::Tensor& w, const Grid& g, int bits) {
  return at::clamp(at::round(w / g.scale) + g.zero, 0, double((1 << bits) - 1));
}

}  // namespace quantcore::algorithms
