#include "gptq_block.h"

#include <algorithm>

#include "round_even.h"

namespace quantcore::kernels {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// The rank-1 update below is the hot loop: let the loader pick an AVX-512 or
// AVX2 build (GCC ifunc clones). The file is compiled with -ffp-contract=off so
// no clone fuses w - e * h into an FMA, which would round differently from the
// reference's product-then-subtract.
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
double block_row(float* __restrict w, const float* __restrict hinv, int64_t ld_h, int64_t count,
                 const float* scales, const float* zeros, const int32_t* grid_of, float maxq,
                 uint8_t* __restrict codes, float* __restrict err) {
  double loss = 0;
  for (int64_t i = 0; i < count; ++i) {
    const float* __restrict h = hinv + i * ld_h;
    const int32_t g = grid_of[i];
    const float scale = scales[g], zero = zeros[g], x = w[i];
    const float code = std::min(std::max(round_even(x / scale) + zero, 0.f), maxq);
    const float e = (x - (code - zero) * scale) / h[i];
    codes[i] = uint8_t(code);
    err[i] = e;
    loss += double(e) * double(e);
    for (int64_t j = i + 1; j < count; ++j) w[j] -= e * h[j];
  }
  return loss;
}

}  // namespace

double gptq_block_rows(const GptqBlock& b, int64_t row_begin, int64_t row_end) {
  const float maxq = float((1 << b.bits) - 1);
  double loss = 0;
  for (int64_t r = row_begin; r < row_end; ++r)
    loss += block_row(b.w + r * b.ld_w, b.hinv, b.ld_h, b.count, b.scales + r * b.ld_grid,
                      b.zeros + r * b.ld_grid, b.grid_of, maxq, b.codes + r * b.ld_codes,
                      b.err + r * b.ld_err);
  return loss;
}

}  // namespace quantcore::kernels
