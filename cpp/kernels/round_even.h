// Round half to even without libm, shared by the quantizers (RTN, GPTQ).
#pragma once

#include <algorithm>

namespace quantcore::kernels {

// Adding and subtracting 1.5 * 2^23 leaves the nearest integer under the
// default rounding mode (ties to even, as torch.round). Exact for |v| < 2^22;
// larger values are clamped first (every caller clamps codes to [0, 255]).
// Unlike nearbyint on baseline x86-64, this compiles to plain SSE2 and vectorizes.
static inline float round_even(float v) {
  constexpr float kMagic = 12582912.0f;
  v = std::min(std::max(v, -4194304.0f), 4194304.0f);
  return (v + kMagic) - kMagic;
}

}  // namespace quantcore::kernels
