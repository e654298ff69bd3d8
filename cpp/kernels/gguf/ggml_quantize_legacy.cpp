// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: blocks of 32 with one fp16 scale (and min).
// Bit-exactness with ggml's reference rests on the operation order below: the
// codes come from the unrounded float32 scale, with separately rounded
// multiply and add (this file is compiled with -ffp-contract=off).
#include "ggml_quantize_legacy.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "../float_convert.h"
#include "ggml_quant_search.h"
#include "ggml_types.h"

namespace quantcore::kernels::gguf {

namespace {

float signed_absmax(const float* x, int n) {  // first element of largest magnitude, sign kept
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void pack_low_nibbles(const uint8_t* q, uint8_t* qs) {  // element j low nibble, j + 16 high
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

void pack_fifth_bits(const uint8_t* q, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= uint32_t((q[j] >> 4) & 1) << j;
  std::memcpy(qh_bytes, &qh, 4);
}

// Symmetric blocks (Q4_0, Q5_0): the extreme element maps to code 0.
float symmetric_block(const float* x, int levels, uint8_t* q, const float* weights) {
  if (weights) return fit_symmetric(32, levels / 2, x, q, weights);
  const float d = signed_absmax(x, 32) / float(-(levels / 2));
  const float id = d ? 1.0f / d : 0.0f;
  const float offset = float(levels / 2) + 0.5f;
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(levels - 1, int(int8_t(x[j] * id + offset))));
  return d;
}

// Blocks with a min (Q4_1, Q5_1). Returns d; *min_out is the (negative or zero) offset.
float offset_block(const float* x, int levels, uint8_t* q, float* min_out, const float* weights) {
  if (weights) {
    float neg_min;
    const float d = fit_with_min(32, levels - 1, x, weights, q, &neg_min, -0.9f, 0.05f, 36, false);
    *min_out = -neg_min;
    return d;
  }
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / float(levels - 1);
  const float id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(levels - 1, int(int8_t((x[j] - min) * id + 0.5f))));
  *min_out = min;
  return d;
}

// Per-element weights of one block from the importance vector, as llama.cpp
// forms them: qw * sqrt(sigma2 + x^2), sigma2 the row's mean square.
void block_weights(const float* x, const float* importance, float sigma2, float* w) {
  for (int j = 0; j < 32; ++j) w[j] = importance[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

}  // namespace

void quantize_legacy_row(GgmlType type, const float* x, uint8_t* dst, int64_t n, const float* importance) {
  float sigma2 = 0;
  if (importance && type != GgmlType::Q8_0) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
    sigma2 = sum_x2 / float(n);
  }
  float weights[32];
  uint8_t q[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    const float* w = nullptr;
    if (importance && type != GgmlType::Q8_0) {
      block_weights(xb, importance + 32 * b, sigma2, weights);
      w = weights;
    }
    switch (type) {
      case GgmlType::Q8_0: {
        BlockQ8_0 blk;
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        blk.d = f32_to_f16(d);
        for (int j = 0; j < 32; ++j) blk.qs[j] = int8_t(std::round(xb[j] * id));  // ties away from zero
        std::memcpy(dst + b * sizeof(blk), &blk, sizeof(blk));
        break;
      }
      case GgmlType::Q4_0: {
        BlockQ4_0 blk;
        blk.d = f32_to_f16(symmetric_block(xb, 16, q, w));
        pack_low_nibbles(q, blk.qs);
        std::memcpy(dst + b * sizeof(blk), &blk, sizeof(blk));
        break;
      }
      case GgmlType::Q5_0: {
        BlockQ5_0 blk;
        blk.d = f32_to_f16(symmetric_block(xb, 32, q, w));
        pack_low_nibbles(q, blk.qs);
        pack_fifth_bits(q, blk.qh);
        std::memcpy(dst + b * sizeof(blk), &blk, sizeof(blk));
        break;
      }
      case GgmlType::Q4_1: {
        BlockQ4_1 blk;
        float min;
        blk.d = f32_to_f16(offset_block(xb, 16, q, &min, w));
        blk.m = f32_to_f16(min);
        pack_low_nibbles(q, blk.qs);
        std::memcpy(dst + b * sizeof(blk), &blk, sizeof(blk));
        break;
      }
      case GgmlType::Q5_1: {
        BlockQ5_1 blk;
        float min;
        blk.d = f32_to_f16(offset_block(xb, 32, q, &min, w));
        blk.m = f32_to_f16(min);
        pack_low_nibbles(q, blk.qs);
        pack_fifth_bits(q, blk.qh);
        std::memcpy(dst + b * sizeof(blk), &blk, sizeof(blk));
        break;
      }
      default:
        return;
    }
  }
}

}  // namespace quantcore::kernels::gguf
