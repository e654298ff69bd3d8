// NaN/Inf checks without an element-sized temporary: at::isfinite(t).all()
// allocates |t| and three masks (about 2x a float32 weight), which is what
// bounds peak memory on the largest layer; NaN propagates into min/max and
// +-Inf lands there, so one reduction answers the same question.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace quantcore::algorithms {

inline bool all_finite(const at::Tensor& t) {
  if (t.numel() == 0 || !at::isFloatingType(t.scalar_type())) return true;
  auto [lo, hi] = at::aminmax(t);
  return std::isfinite(lo.item<double>()) && std::isfinite(hi.item<double>());
}

}  // namespace quantcore::algorithms
