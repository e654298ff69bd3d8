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
//
// pick_split_k_by takes the wave as a function of k: a launch whose k slices
// of a tile run as one thread-block cluster has fewer CTAs resident when the
// clusters do not tile the GPCs evenly (k with wave_of(k) < 1 are skipped).
template <class WaveOf>
inline int pick_split_k_by(int64_t tiles, int64_t stages, WaveOf wave_of, int64_t cap, double fixed_stages) {
  if (tiles < 1 || stages < 1 || cap < 1 || wave_of(int64_t(1)) < 1) return 1;
  auto cost = [&](int64_t k) {
    const int64_t wave = wave_of(k);
    if (wave < 1) return -1.0;  // k cannot run at all
    return double((tiles * k + wave - 1) / wave) * (double(stages) / double(k) + fixed_stages);
  };
  int64_t best = 1;
  double best_cost = cost(1);
  for (int64_t k = 2; k <= cap; ++k) {
    const double c = cost(k);
    if (c >= 0 && c < best_cost * (1 - 1e-9)) best = k, best_cost = c;
  }
  return int(best);
}

inline int pick_split_k(int64_t tiles, int64_t stages, int64_t wave, int64_t cap, double fixed_stages) {
  if (wave < 1) return 1;
  return pick_split_k_by(tiles, stages, [wave](int64_t) { return wave; }, cap, fixed_stages);
}

}  // namespace quantcore::kernels
