// Loop nest shared by the SIMD "rows" kernels: blocks of weight rows, tiles of
// up to 4 activation rows, R weight rows decoded side by side (more independent
// accumulators and memory streams for small M). Everything here has internal
// linkage on purpose: each ISA file compiles its own copy with its own target
// flags, and none of them may leak into generic code.
#pragma once

#include <algorithm>

#include "qgemm_layout.h"

namespace quantcore::kernels {
namespace {

constexpr int64_t kRowBlock = 16;  // weight rows kept hot in L1/L2 across x tiles
constexpr int kMaxTile = 6;        // activation rows sharing one decoded weight vector (at most)
constexpr int kMaxRows = 4;        // weight rows decoded side by side

// Kernel<R, MT>::run(p, ws, n, m0, out) sets out[r * MT + i] = y[m0 + i, n + r]
// (bias excluded) for r < R, i < MT. RowsFor(MT) picks R for a tile height.
template <template <int, int> class Kernel, int R, int MT>
void run_block(const QGemmProblem& p, const void* ws, void* y, DType y_type, int64_t n_begin,
               int64_t n_end, int64_t m0) {
  float out[kMaxRows * kMaxTile];
  auto emit = [&](int64_t n, int rows) {
    for (int r = 0; r < rows; ++r) {
      const float b = p.bias ? p.bias[n + r] : 0.f;
      for (int i = 0; i < MT; ++i) layout::store_y(y, y_type, (m0 + i) * p.N + n + r, out[r * MT + i] + b);
    }
  };
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) {
    Kernel<R, MT>::run(p, ws, n, m0, out);
    emit(n, R);
  }
  for (; n < n_end; ++n) {
    Kernel<1, MT>::run(p, ws, n, m0, out);
    emit(n, 1);
  }
}

// Tiles of up to 4 activation rows (kWide: up to 6, for kernels with registers
// to spare; 8 spills); R1..R4 weight rows side by side for tiles of 1..4 rows, 1 above.
template <template <int, int> class Kernel, int R1, int R2, int R3, int R4, bool kWide = false>
void drive_rows(const QGemmProblem& p, const void* ws, void* y, DType y_type, int64_t n_begin,
                int64_t n_end) {
  constexpr int64_t tile = kWide ? 6 : 4;
  for (int64_t nb = n_begin; nb < n_end; nb += kRowBlock) {
    const int64_t ne = std::min(nb + kRowBlock, n_end);
    for (int64_t m0 = 0; m0 < p.M; m0 += tile) {
      const int64_t mt = std::min<int64_t>(tile, p.M - m0);
      if constexpr (kWide) {
        if (mt > 4) {
          if (mt == 6)
            run_block<Kernel, 1, 6>(p, ws, y, y_type, nb, ne, m0);
          else
            run_block<Kernel, 1, 5>(p, ws, y, y_type, nb, ne, m0);
          continue;
        }
      }
      switch (mt) {
        case 4: run_block<Kernel, R4, 4>(p, ws, y, y_type, nb, ne, m0); break;
        case 3: run_block<Kernel, R3, 3>(p, ws, y, y_type, nb, ne, m0); break;
        case 2: run_block<Kernel, R2, 2>(p, ws, y, y_type, nb, ne, m0); break;
        default: run_block<Kernel, R1, 1>(p, ws, y, y_type, nb, ne, m0); break;
      }
    }
  }
}

}  // namespace
}  // namespace quantcore::kernels
