#include "ggml_quant_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace quantcore::kernels::gguf {

namespace {

constexpr float kTiny = 1e-15f;  // ggml's GROUP_MAX_EPS: below this a block is all zero

int clamp_int(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

// The element of largest magnitude, sign kept (the first one on ties).
float signed_max(int n, const float* x, float* amax_out) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  *amax_out = amax;
  return max;
}

}  // namespace

int nearest_int(float f) {
  // Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
  const float biased = f + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  return (bits & 0x007fffff) - 0x00400000;
}

float fit_symmetric(int n, int nmax, const float* x, uint8_t* codes, const float* weights) {
  float amax;
  const float max = signed_max(n, x, &amax);
  if (amax < kTiny) {
    std::fill(codes, codes + n, uint8_t(0));
    return 0.f;
  }
  auto weight = [&](int i) { return weights ? weights[i] : x[i] * x[i]; };
  auto code = [&](float iscale, int i) { return clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1); };
  float iscale = -nmax / max;  // the extreme element takes the extra negative code
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = code(iscale, i);
    codes[i] = uint8_t(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = code(iscale, i);
      const float w = weight(i);
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) codes[i] = uint8_t(code(iscale, i) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float fit_symmetric_refined(int n, int nmax, const float* x, uint8_t* codes) {
  float amax;
  const float max = signed_max(n, x, &amax);
  if (amax < kTiny) {
    std::fill(codes, codes + n, uint8_t(0));
    return 0.f;
  }
  const float iscale = -nmax / max;
  int l_of[256];
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    l_of[i] = l;
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  // Coordinate descent: each code moved to its best value given the others,
  // kept when the fit improves; the sums follow each accepted change at once.
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * l_of[i];
      if (slx > 0) {
        float sl2 = suml2 - w * l_of[i] * l_of[i];
        const int new_l = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != l_of[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            l_of[i] = new_l;
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) codes[i] = uint8_t(l_of[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float fit_with_min(int n, int nmax, const float* x, const float* weights, uint8_t* codes, float* min_out,
                   float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max <= min) {
    std::fill(codes, codes + n, uint8_t(0));
    *min_out = -min;
    return 0.f;
  }
  auto error = [&](float scale, float offset, const uint8_t* l) {
    float total = 0;
    for (int i = 0; i < n; ++i) {
      float diff = scale * l[i] + offset - x[i];
      diff = use_mad ? std::fabs(diff) : diff * diff;
      total += weights[i] * diff;
    }
    return total;
  };
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  for (int i = 0; i < n; ++i) codes[i] = uint8_t(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
  float best_error = error(scale, min, codes);
  uint8_t trial[256];
  for (int is = 0; is <= nstep; ++is) {
    // The range uses the current min: a better candidate moves it for the next ones.
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      trial[i] = uint8_t(l);
      sum_l += weights[i] * l;
      sum_l2 += weights[i] * l * l;
      sum_xl += weights[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      const float err = error(this_scale, this_min, trial);
      if (err < best_error) {
        std::memcpy(codes, trial, size_t(n));
        best_error = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *min_out = -min;
  return scale;
}

float fit_nonnegative(int n, int nmax, const float* x, uint8_t* codes, const float* weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kTiny) {
    std::fill(codes, codes + n, uint8_t(0));
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) codes[i] = uint8_t(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * codes[i];
    best_mse += weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  int l_of[256];
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    l_of[i] = l;
    sumlx += weights[i] * x[i] * l;
    suml2 += weights[i] * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - weights[i] * x[i] * l_of[i];
      float sl2 = suml2 - weights[i] * l_of[i] * l_of[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != l_of[i]) {
          slx += weights[i] * x[i] * new_l;
          sl2 += weights[i] * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            l_of[i] = new_l;
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) codes[i] = uint8_t(std::max(0, l_of[i]));
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

}  // namespace quantcore::kernels::gguf
