#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>

#include "float_convert.h"

using namespace quantcore::kernels;

TEST_CASE("f16 round trip is the identity on every non-NaN bit pattern") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const bool is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
    if (is_nan) {
      REQUIRE(std::isnan(f16_to_f32(uint16_t(h))));
      continue;
    }
    REQUIRE(f32_to_f16(f16_to_f32(uint16_t(h))) == h);
  }
}

TEST_CASE("f16 rounding is round-to-nearest-even, overflow goes to inf") {
  REQUIRE(f32_to_f16(1.0f) == 0x3c00);
  REQUIRE(f32_to_f16(65504.0f) == 0x7bff);
  REQUIRE(f32_to_f16(65519.0f) == 0x7bff);
  REQUIRE(f32_to_f16(65520.0f) == 0x7c00);  // tie between 65504 and 65536 -> even -> inf
  REQUIRE(f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);         // tie -> even mantissa
  REQUIRE(f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);         // tie -> even mantissa
  REQUIRE(f16_to_f32(f32_to_f16(5.9604645e-08f)) == 5.9604645e-08f);  // smallest subnormal
  REQUIRE(f32_to_f16(2.0e-08f) == 0);
}

TEST_CASE("bf16 conversion rounds to nearest even and keeps NaN") {
  REQUIRE(f32_to_bf16(1.0f) == 0x3f80);
  REQUIRE(bf16_to_f32(f32_to_bf16(3.0f)) == 3.0f);
  REQUIRE(f32_to_bf16(bits_f32(0x3f808000u)) == 0x3f80);  // tie -> even
  REQUIRE(f32_to_bf16(bits_f32(0x3f818000u)) == 0x3f82);  // tie -> even (up)
  REQUIRE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  for (int v = -256; v <= 256; ++v) REQUIRE(bf16_to_f32(f32_to_bf16(float(v))) == float(v));
}
