#include "rtn.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
    float z = std::nearbyint(-lo / g.scale);
    g.zero = int(std::min(std::max(z, 0.f), float(maxq)));
  }
  return g;
}

inline int quantize_one(float w, const GroupGrid& g, int maxq) {
  float q = std::nearbyint(w / g.scale) + float(g.zero);
  return int(std::min(std::max(q, 0.f), float(maxq)));
}

float group_sq_error(const float* w, int64_t n, const GroupGrid& g, int maxq) {
  float err = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    float d = float(quantize_one(w[i], g, maxq) - g.zero) * g.scale - w[i];
    err += d * d;
  }
  return err;
}

}  // namespace

void rtn_quantize_rows(const float* w, int64_t cols, const RtnParams& p, uint8_t* codes,
                       float* scales, uint8_t* zeros, int64_t row_begin, int64_t row_end) {
  const int maxq = (1 << p.bits) - 1;
  const int64_t gs = p.group_size;
  const int64_t groups = cols / gs;
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* wg = w + r * cols + g * gs;
      float lo = wg[0], hi = wg[0];
      for (int64_t i = 1; i < gs; ++i) {
        lo = std::min(lo, wg[i]);
        hi = std::max(hi, wg[i]);
      }
      GroupGrid best = make_grid(lo, hi, p);
      if (p.mse_clip) {
        float best_err = group_sq_error(wg, gs, best, maxq);
        const int steps = int(float(p.clip_grid) * p.clip_max_shrink);
        for (int i = 1; i <= steps; ++i) {
          float ratio = 1.f - float(i) / float(p.clip_grid);
          GroupGrid cand = make_grid(lo * ratio, hi * ratio, p);
          float err = group_sq_error(wg, gs, cand, maxq);
          if (err < best_err) {
            best_err = err;
            best = cand;
          }
        }
      }
      uint8_t* qg = codes + r * cols + g * gs;
      for (int64_t i = 0; i < gs; ++i) qg[i] = uint8_t(quantize_one(wg[i], best, maxq));
      scales[r * groups + g] = best.scale;
      zeros[r * groups + g] = uint8_t(best.zero);
    }
  }
}

}  // namespace quantcore::kernels
