// How many K slices a split-K GEMM launch should use. Plain C++ (no CUDA):
// the CUDA GEMMs call it on the host, the Catch2 tests check it on the CPU.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

// `tiles` output tiles of `stages` K stages each, CTAs of one (tile, slice)
// each, `wave` CTAs resident at once (SMs x CTAs per SM), at most `cap` slices.
// All CTAs do the same work, so a launch takes about
//   ceil(tiles * k / wave) x (stages / k + fixed_stages),
// waves of CTAs times one CTA's time, where `fixed_stages` is what a CTA costs
// besides its stages (filling its pipeline, writing and summing its partial
// sums), in stages. Returns the k in [1, cap] with the least of that, the fewest
// slices on ties (each slice adds partial sums to write and add).
inline int pick_split_k(int64_t tiles, int64_t stages, int64_t wave, int64_t cap, double fixed_stages) {
  if (tiles < 1 || stages < 1 || wave < 1 || cap < 1) return 1;
  auto cost = [&](int64_t k) {
    return double((tiles * k + wave - 1) / wave) * (double(stages) / double(k) + fixed_stages);
  };
  int64_t best = 1;
  double best_cost = cost(1);
  for (int64_t k = 2; k <= cap; ++k) {
    const double c = cost(k);
    if (c < best_cost * (1 - 1e-9)) best = k, best_cost = c;
  }
  return int(best);
}

}  // namespace quantcore::kernels
