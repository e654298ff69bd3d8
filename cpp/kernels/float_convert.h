// Scalar fp16/bf16 <-> fp32 conversions with round-to-nearest-even.
//
// Plain C++ (no intrinsics) so every translation unit can use them; the
// functions are `static inline` so SIMD-compiled files never export a copy the
// linker could pick for a generic caller.
#pragma once

#include <cstdint>
#include <cstring>

namespace quantcore::kernels {

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

static inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

static inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + rounding) >> 16);
}

static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // Subnormal: value = mant * 2^-24.
    float v = float(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);        // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);       // rounds to inf
  if (abs < 0x38800000u) {                                        // subnormal or zero
    // Adding 0.5 (as a float) aligns the mantissa so the FPU does the RNE rounding.
    float magic = bits_f32(abs) + 0.5f;
    return uint16_t(sign | (f32_bits(magic) - 0x3f000000u));
  }
  uint32_t mant_odd = (abs >> 13) & 1u;
  abs += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
  return uint16_t(sign | (abs >> 13));
}

// Storage type of quantization scales; scales are rounded through it before use
// so that the codes are computed against exactly the value that is stored.
enum class ScaleType { kF32 = 0, kF16 = 1, kBF16 = 2 };

static inline float round_to_scale_type(float v, ScaleType t) {
  switch (t) {
    case ScaleType::kF16: return f16_to_f32(f32_to_f16(v));
    case ScaleType::kBF16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}

}  // namespace quantcore::kernels
