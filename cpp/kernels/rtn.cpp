#include "rtn.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "round_even.h"
#include "status.h"

namespace quantcore::kernels {

void rtn_validate(const RtnParams& p, int64_t cols) {
  QC_REQUIRE(p.bits >= 2 && p.bits <= 8, "bits must be in [2, 8]");
  QC_REQUIRE(p.group_size > 0, "group_size must be positive");
  QC_REQUIRE(cols % p.group_size == 0, "group_size must divide the number of columns");
  QC_REQUIRE(!p.mse_clip || (p.clip_grid >= 1 && p.clip_max_shrink >= 0.f &&
                             p.clip_max_shrink < 1.f),
             "clip_grid must be >= 1 and clip_max_shrink in [0, 1)");
}

namespace {

struct GroupGrid {
  float scale;
  int zero;
};

// Smallest positive scale the storage type keeps non-zero: a group whose range
// underflows it is quantized against this floor rather than dividing by zero.
float min_positive_scale(ScaleType t) {
  switch (t) {
    case ScaleType::kF16: return 5.9604645e-08f;  // smallest f16 subnormal
    default: return std::numeric_limits<float>::denorm_min() * 2;
  }
}

GroupGrid make_grid(float lo, float hi, const RtnParams& p) {
  const int maxq = (1 << p.bits) - 1;
  GroupGrid g;
  if (p.symmetric) {
    float amax = std::max(std::fabs(lo), std::fabs(hi));
    g.scale = amax > 0.f ? 2.f * amax / float(maxq) : 1.f;
    g.zero = (maxq + 1) / 2;
  } else {
    lo = std::min(lo, 0.f);
    hi = std::max(hi, 0.f);
    g.scale = hi > lo ? (hi - lo) / float(maxq) : 1.f;
  }
  g.scale = round_to_scale_type(g.scale, p.scale_type);
  QC_REQUIRE(std::isfinite(g.scale),
             "a group's scale overflows the scale dtype (float16 tops out at 65504); "
             "use float32 or bfloat16 scales for weights this large");
  if (!(g.scale > 0.f)) g.scale = min_positive_scale(p.scale_type);
  if (!p.symmetric) {
    float z = round_even(-lo / g.scale);
    g.zero = int(std::min(std::max(z, 0.f), float(maxq)));
  }
  return g;
}

inline float quantize_one(float w, const GroupGrid& g, float maxq) {
  return std::min(std::max(round_even(w / g.scale) + float(g.zero), 0.f), maxq);
}

// Squared error of a candidate grid. Multiplying by the reciprocal instead of
// dividing may round a rare tie differently from quantize_one; that only
// nudges which candidate wins, never the codes of the winner.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// The clip search evaluates ~80 candidate grids per group: let the loader pick
// an AVX2 / AVX-512 build of this loop when the CPU has one (GCC ifunc clones).
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
float group_sq_error(const float* w, int64_t n, const GroupGrid& g, float maxq) {
  // Sixteen independent partial sums so the loop vectorizes (FP adds may not be
  // reordered otherwise).
  constexpr int kLanes = 16;
  float part[kLanes] = {};
  const float zero = float(g.zero), inv = 1.f / g.scale;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float q = std::min(std::max(round_even(w[i + l] * inv) + zero, 0.f), maxq);
      const float d = (q - zero) * g.scale - w[i + l];
      part[l] += d * d;
    }
  }
  for (; i < n; ++i) {
    const float q = std::min(std::max(round_even(w[i] * inv) + zero, 0.f), maxq);
    const float d = (q - zero) * g.scale - w[i];
    part[0] += d * d;
  }
  float err = 0.f;
  for (float v : part) err += v;
  return err;
}

GroupGrid find_group_grid(const float* wg, int64_t n, const RtnParams& p) {
  const float maxq = float((1 << p.bits) - 1);
  float lo = wg[0], hi = wg[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, wg[i]);
    hi = std::max(hi, wg[i]);
  }
  GroupGrid best = make_grid(lo, hi, p);
  if (p.mse_clip) {
    float best_err = group_sq_error(wg, n, best, maxq);
    const int steps = int(float(p.clip_grid) * p.clip_max_shrink);
    for (int i = 1; i <= steps; ++i) {
      float ratio = 1.f - float(i) / float(p.clip_grid);
      GroupGrid cand = make_grid(lo * ratio, hi * ratio, p);
      float err = group_sq_error(wg, n, cand, maxq);
      if (err < best_err) {
        best_err = err;
        best = cand;
      }
    }
  }
  return best;
}

}  // namespace

void rtn_group_grid(const float* w, int64_t n, const RtnParams& p, float* scale, int* zero) {
  const GroupGrid g = find_group_grid(w, n, p);
  *scale = g.scale;
  *zero = g.zero;
}

void rtn_quantize_rows(const float* w, int64_t cols, const RtnParams& p, uint8_t* codes,
                       float* scales, uint8_t* zeros, int64_t row_begin, int64_t row_end) {
  const float maxq = float((1 << p.bits) - 1);
  const int64_t gs = p.group_size;
  const int64_t groups = cols / gs;
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* wg = w + r * cols + g * gs;
      const GroupGrid best = find_group_grid(wg, gs, p);
      uint8_t* qg = codes + r * cols + g * gs;
      for (int64_t i = 0; i < gs; ++i) qg[i] = uint8_t(quantize_one(wg[i], best, maxq));
      scales[r * groups + g] = best.scale;
      zeros[r * groups + g] = uint8_t(best.zero);
    }
  }
}

}  // namespace quantcore::kernels
