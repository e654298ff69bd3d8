// Q2_K .. Q6_K: each super-block of 256 is fitted sub-block by sub-block, the
// sub-block scales (and mins) are quantized to 4/6/8 bits under one fp16
// super-scale, and every code is then recomputed from the scale as stored.
// Compiled with -ffp-contract=off: the float32 operation order is ggml's.
#include "ggml_quantize_kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../float_convert.h"
#include "ggml_quant_search.h"

namespace quantcore::kernels::gguf {

namespace {

constexpr float kTiny = 1e-15f;

int clamp_int(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

float sum_squares(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

// Importance weights of a sub-block: qw * sqrt(sigma2 + x^2); returns their sum.
float sub_block_weights(const float* x, const float* qw, int n, float sigma2, float* w) {
  float sum = 0;
  for (int i = 0; i < n; ++i) {
    w[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
    sum += w[i];
  }
  return sum;
}

// Two-bit plane (Q2_K, Q3_K): each 32 bytes take 128 codes, four per byte.
void pack_two_bits(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kSuperBlock; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q4_K/Q5_K: each 64 codes take 32 bytes, the first 32 in the low nibbles.
void pack_four_bits(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kSuperBlock; j += 64)
    for (int l = 0; l < 32; ++l) qs[j / 2 + l] = uint8_t((L[j + l] & 0xF) | ((L[j + l + 32] & 0xF) << 4));
}

// Q4_K/Q5_K's 12 bytes of 6-bit scales and mins.
void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* packed) {
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      packed[j] = ls[j];
      packed[j + 4] = lm[j];
    } else {
      packed[j + 4] = uint8_t((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      packed[j - 4] |= uint8_t((ls[j] >> 4) << 6);
      packed[j] |= uint8_t((lm[j] >> 4) << 6);
    }
  }
}

// Q3_K's 12 bytes of 6-bit scales (values already offset to 0..63).
void pack_scales_q3(const uint8_t* l6, uint8_t* packed) {
  std::memset(packed, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int l = l6[j];
    if (j < 8) packed[j] |= uint8_t(l & 0xF);
    else packed[j - 8] |= uint8_t((l & 0xF) << 4);
    packed[8 + j % 4] |= uint8_t((l >> 4) << (2 * (j / 4)));
  }
}

// Codes of sub-blocks with a min, recomputed from the stored scales: x ~ d*sc*l - dmin*m.
// A sub-block whose scale stored as zero keeps its first-pass codes.
void requantize_with_min(const float* x, uint8_t* L, int sub, int nmax, float d, float dmin,
                         const uint8_t* sc, const uint8_t* m) {
  for (int j = 0; j < kSuperBlock / sub; ++j) {
    const float dd = d * sc[j];
    if (!dd) continue;
    const float dm = dmin * m[j];
    for (int ii = 0; ii < sub; ++ii)
      L[sub * j + ii] = uint8_t(clamp_int(nearest_int((x[sub * j + ii] + dm) / dd), 0, nmax));
  }
}

// Symmetric sub-blocks of 16 (Q3_K, Q6_K): x ~ d*sc*(l - nmax), codes stored as l.
void requantize_symmetric(const float* x, uint8_t* L, int nmax, float d, const int* sc) {
  for (int j = 0; j < 16; ++j) {
    const float dd = d * sc[j];
    if (!dd) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = uint8_t(clamp_int(nearest_int(x[16 * j + ii] / dd), -nmax, nmax - 1) + nmax);
  }
}

void q2_k(const float* x, const float* qw, BlockQ2_K* y) {
  uint8_t L[kSuperBlock];
  float scales[16], mins[16], w[16], sw[16];
  uint8_t ls[16], lm[16];
  const float sigma2 = qw ? sum_squares(x, kSuperBlock) / kSuperBlock : 0.f;
  for (int j = 0; j < 16; ++j) {
    const float* xs = x + 16 * j;
    if (qw) {
      sw[j] = sub_block_weights(xs, qw + 16 * j, 16, sigma2, w);
      scales[j] = fit_with_min(16, 3, xs, w, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, false);
    } else {
      for (int l = 0; l < 16; ++l) w[l] = std::fabs(xs[l]);
      scales[j] = fit_with_min(16, 3, xs, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
    }
  }
  if (qw) {
    y->d = f32_to_f16(fit_nonnegative(16, 15, scales, ls, sw));
    y->dmin = f32_to_f16(fit_nonnegative(16, 15, mins, lm, sw));
  } else {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    for (int j = 0; j < 16; ++j) {
      ls[j] = max_scale > 0 ? uint8_t(nearest_int(15.f / max_scale * scales[j])) : 0;
      lm[j] = max_min > 0 ? uint8_t(nearest_int(15.f / max_min * mins[j])) : 0;
    }
    y->d = f32_to_f16(max_scale > 0 ? max_scale / 15.f : 0.f);
    y->dmin = f32_to_f16(max_min > 0 ? max_min / 15.f : 0.f);
  }
  for (int j = 0; j < 16; ++j) {
    y->scales[j] = uint8_t((ls[j] & 0xF) | (lm[j] << 4));
    ls[j] = y->scales[j] & 0xF;
    lm[j] = y->scales[j] >> 4;
  }
  requantize_with_min(x, L, 16, 3, f16_to_f32(y->d), f16_to_f32(y->dmin), ls, lm);
  pack_two_bits(L, y->qs);
}

void q3_k(const float* x, const float* qw, BlockQ3_K* y) {
  uint8_t L[kSuperBlock];
  float scales[16], w[16], sw[16];
  uint8_t l6[16];
  float d;
  if (qw) {
    const float sigma2 = 2 * sum_squares(x, kSuperBlock) / kSuperBlock;
    for (int j = 0; j < 16; ++j) {
      sw[j] = sub_block_weights(x + 16 * j, qw + 16 * j, 16, sigma2, w);
      scales[j] = fit_symmetric(16, 4, x + 16 * j, L + 16 * j, w);
    }
    d = fit_symmetric(16, 32, scales, l6, sw);  // codes already offset by 32
  } else {
    float amax = 0, max_scale = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_symmetric_refined(16, 4, x + 16 * j, L + 16 * j);
      if (std::fabs(scales[j]) > amax) {
        amax = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::fill(l6, l6 + 16, uint8_t(0));
    d = 0;
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) l6[j] = uint8_t(clamp_int(int8_t(nearest_int(iscale * scales[j])), -32, 31) + 32);
      d = 1 / iscale;
    }
  }
  pack_scales_q3(l6, y->scales);
  y->d = f32_to_f16(d);
  int sc[16];
  for (int j = 0; j < 16; ++j) sc[j] = unpack_scale_q3(y->scales, j);
  requantize_symmetric(x, L, 4, f16_to_f32(y->d), sc);
  // Third bit of each code into hmask; the two low bits into qs.
  std::memset(y->hmask, 0, sizeof(y->hmask));
  for (int e = 0; e < kSuperBlock; ++e) {
    if (L[e] > 3) {
      y->hmask[e % 32] |= uint8_t(1 << (e / 32));
      L[e] -= 4;
    }
  }
  pack_two_bits(L, y->qs);
}

// Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32 with a scale and a min each.
template <typename Block>
void q45_k(const float* x, const float* qw, int nmax, Block* y) {
  uint8_t L[kSuperBlock];
  float scales[8], mins[8], w[32], sw[8];
  uint8_t ls[8], lm[8];
  const float sigma2 = qw ? 2 * sum_squares(x, kSuperBlock) / kSuperBlock : 0.f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    if (qw) {
      sw[j] = sub_block_weights(xs, qw + 32 * j, 32, sigma2, w);
      scales[j] = fit_with_min(32, nmax, xs, w, L + 32 * j, &mins[j], -0.9f, 0.05f, 36, false);
    } else {
      const float av_x = std::sqrt(sum_squares(xs, 32) / 32);  // the sub-block's RMS
      for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(xs[l]);
      const bool q4 = nmax == 15;
      scales[j] = fit_with_min(32, nmax, xs, w, L + 32 * j, &mins[j], q4 ? -1.f : -0.5f, 0.1f, q4 ? 20 : 15, false);
    }
  }
  float d, dmin;
  if (qw) {
    d = fit_nonnegative(8, 63, scales, ls, sw);
    dmin = fit_nonnegative(8, 63, mins, lm, sw);
    for (int j = 0; j < 8; ++j) {
      ls[j] = std::min<uint8_t>(63, ls[j]);
      lm[j] = std::min<uint8_t>(63, lm[j]);
    }
  } else {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      ls[j] = std::min<uint8_t>(63, uint8_t(nearest_int(inv_scale * scales[j])));  // to u8 first, as ggml
      lm[j] = std::min<uint8_t>(63, uint8_t(nearest_int(inv_min * mins[j])));
    }
    d = max_scale / 63.f;
    dmin = max_min / 63.f;
  }
  pack_scale_min_k4(ls, lm, y->scales);
  y->d = f32_to_f16(d);
  y->dmin = f32_to_f16(dmin);
  for (int j = 0; j < 8; ++j) unpack_scale_min_k4(y->scales, j, &ls[j], &lm[j]);
  requantize_with_min(x, L, 32, nmax, f16_to_f32(y->d), f16_to_f32(y->dmin), ls, lm);
  if constexpr (sizeof(Block) == sizeof(BlockQ5_K)) {
    std::memset(y->qh, 0, sizeof(y->qh));
    for (int e = 0; e < kSuperBlock; ++e) {
      if (L[e] > 15) {
        y->qh[e % 32] |= uint8_t(1 << (e / 32));
        L[e] -= 16;
      }
    }
  }
  pack_four_bits(L, y->qs);
}

void q6_k(const float* x, const float* qw, BlockQ6_K* y) {
  uint8_t L[kSuperBlock];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < 16; ++j) {
    // With an importance matrix its raw values weight the fit (llama.cpp's choice for Q6_K).
    scales[j] = fit_symmetric(16, 32, x + 16 * j, L + 16 * j, qw ? qw + 16 * j : nullptr);
    if (std::fabs(scales[j]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  if (max_abs_scale < kTiny) {
    std::memset(y, 0, sizeof(*y));
    return;
  }
  const float iscale = -128.f / max_scale;
  y->d = f32_to_f16(1 / iscale);
  int sc[16];
  for (int j = 0; j < 16; ++j) {
    y->scales[j] = int8_t(std::min(127, nearest_int(iscale * scales[j])));
    sc[j] = y->scales[j];
  }
  requantize_symmetric(x, L, 32, f16_to_f32(y->d), sc);
  for (int j = 0; j < kSuperBlock; j += 128) {
    uint8_t* ql = y->ql + j / 2;
    uint8_t* qh = y->qh + j / 4;
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = L + j + l;
      ql[l] = uint8_t((c[0] & 0xF) | ((c[64] & 0xF) << 4));
      ql[l + 32] = uint8_t((c[32] & 0xF) | ((c[96] & 0xF) << 4));
      qh[l] = uint8_t((c[0] >> 4) | ((c[32] >> 4) << 2) | ((c[64] >> 4) << 4) | ((c[96] >> 4) << 6));
    }
  }
}

template <typename Block, typename Fn>
void each_block(const float* x, uint8_t* dst, int64_t n, const float* importance, Fn fn) {
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    Block blk;
    fn(x + kSuperBlock * b, importance ? importance + kSuperBlock * b : nullptr, &blk);
    std::memcpy(dst + b * sizeof(Block), &blk, sizeof(Block));
  }
}

}  // namespace

void quantize_kquant_row(GgmlType type, const float* x, uint8_t* dst, int64_t n, const float* importance) {
  switch (type) {
    case GgmlType::Q2_K: each_block<BlockQ2_K>(x, dst, n, importance, q2_k); break;
    case GgmlType::Q3_K: each_block<BlockQ3_K>(x, dst, n, importance, q3_k); break;
    case GgmlType::Q4_K:
      each_block<BlockQ4_K>(x, dst, n, importance, [](const float* xb, const float* qw, BlockQ4_K* y) {
        q45_k(xb, qw, 15, y);
      });
      break;
    case GgmlType::Q5_K:
      each_block<BlockQ5_K>(x, dst, n, importance, [](const float* xb, const float* qw, BlockQ5_K* y) {
        q45_k(xb, qw, 31, y);
      });
      break;
    case GgmlType::Q6_K: each_block<BlockQ6_K>(x, dst, n, importance, q6_k); break;
    default: break;
  }
}

}  // namespace quantcore::kernels::gguf
