// Small AVX-512 helpers shared by the AVX-512 kernel files. Internal linkage
// only (see qgemm_driver.h): include from AVX-512 compiled files alone.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "float_convert.h"

namespace quantcore::kernels {
namespace {

// Masks of the first n lanes (n may be <= 0 or beyond the width).
inline __mmask16 tail_mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}
inline __mmask32 tail_mask32(int64_t n) {
  return n >= 32 ? __mmask32(0xffffffffu) : n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1u);
}

inline __m512 dot_bf16(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// kZeroTables.t[z] maps a 4-bit code q (a word lane index) to bf16(q - z).
struct ZeroTables {
  alignas(64) uint16_t t[16][32];
  ZeroTables() {
    for (int z = 0; z < 16; ++z)
      for (int q = 0; q < 32; ++q) t[z][q] = q < 16 ? f32_to_bf16(float(q - z)) : 0;
  }
};

inline const ZeroTables& zero_tables() {
  static const ZeroTables tables;
  return tables;
}

// Rows kernels prefetch, into L2, the same offset kPrefetchRows weight rows
// further on: the rows the next iteration reads. Measured on Zen 4 with weights
// streaming from DRAM (benchmarks/RESULTS.md): 2 or 8 rows ahead, fixed
// distances of 0.25-4 KiB, or prefetching into L1 (T0) / non-temporally all
// lose, by up to 1.7x for 8-bit rows of 14336 bytes. It scales with K by construction.
constexpr int64_t kPrefetchRows = 4;

inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

}  // namespace
}  // namespace quantcore::kernels
