// How many K slices a split-K GEMM launch should use, and (for the wgmma GEMM)
// which sum its slices meet in. Plain C++ (no CUDA): the wgmma GEMM calls it on
// the host, the Catch2 tests check it on the CPU.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

// `tiles` output tiles of `stages` K stages each, CTAs of one (tile, slice)
// each, `wave` CTAs resident at once (SMs x CTAs per SM), at most `cap` slices.
// All CTAs do the same work, so a launch takes about
//   ceil(tiles * k / wave) x (stages / k + fixed_stages),
// waves of CTAs times one CTA's time, where `fixed_stages` is what a CTA costs
// besides its stages (filling its pipeline, writing and summing its partial
// sums), in stages. The planners below take the k in [1, cap] with the least
// of that, the fewest slices on ties (each slice adds partial sums to write
// and add).

// Launch cost, in a CTA's stages, of k slices with `wave` CTAs resident and a
// CTA's fixed cost `fixed`; -1 where k cannot run (wave < 1).
inline double split_k_cost(int64_t tiles, int64_t stages, int64_t k, int64_t wave, double fixed) {
  if (wave < 1) return -1.0;
  return double((tiles * k + wave - 1) / wave) * (double(stages) / double(k) + fixed);
}

// A split count and the cost the planner expects of it.
struct SplitChoice {
  int k = 1;
  double cost = -1.0;
};

// The least-cost k in [1, cap], the fewest slices on ties; the wave and the
// fixed cost are functions of k (clusters of k slices; a sum whose cost grows
// with the slices it reads).
template <class WaveOf, class FixedOf>
inline SplitChoice plan_split_k(int64_t tiles, int64_t stages, WaveOf wave_of, int64_t cap, FixedOf fixed_of) {
  SplitChoice best;
  if (tiles < 1 || stages < 1 || cap < 1 || wave_of(int64_t(1)) < 1) return best;
  best.cost = split_k_cost(tiles, stages, 1, wave_of(int64_t(1)), fixed_of(int64_t(1)));
  for (int64_t k = 2; k <= cap; ++k) {
    const double c = split_k_cost(tiles, stages, k, wave_of(k), fixed_of(k));
    if (c >= 0 && c < best.cost * (1 - 1e-9)) best.k = int(k), best.cost = c;
  }
  return best;
}

// Which split-K sum a GEMM with both should use: through a global workspace
// (any wave, `ws_wave` CTAs resident) or in a thread-block cluster's shared
// memory (`cluster_wave(k)` CTAs resident in clusters of k, 0 where k cannot
// run). A clustered launch is taken only where all of it is one wave and it
// costs strictly less: clusters that wait for a whole GPC's room, behind
// other clusters or the next kernel's early (PDL) CTAs, ran up to 1.6x
// slower on the H100 (benchmarks/RESULTS.md, sixteenth session).
// `forced` >= 1 fixes the count and only the sum is chosen.
struct SplitSumChoice {
  int k = 1;
  bool cluster = false;
};

template <class ClusterWave, class WsFixed, class ClusterFixed>
inline SplitSumChoice choose_split_sum(int64_t tiles, int64_t stages, int64_t ws_wave, ClusterWave cluster_wave,
                                       int64_t cap, WsFixed ws_fixed, ClusterFixed cluster_fixed, int64_t forced) {
  auto one_wave_cluster = [&](int64_t k) -> int64_t {
    if (k == 1) return ws_wave;
    const int64_t w = cluster_wave(k);
    return w >= 1 && tiles * k <= w ? w : 0;
  };
  SplitSumChoice out;
  SplitChoice ws, cl;
  if (forced >= 1) {
    ws.k = cl.k = int(forced);
    ws.cost = split_k_cost(tiles, stages, forced, ws_wave, ws_fixed(forced));
    cl.cost = forced > 1 ? split_k_cost(tiles, stages, forced, one_wave_cluster(forced), cluster_fixed(forced)) : -1.0;
  } else {
    ws = plan_split_k(tiles, stages, [&](int64_t) { return ws_wave; }, cap, ws_fixed);
    cl = plan_split_k(tiles, stages, one_wave_cluster, cap, cluster_fixed);
  }
  out.k = ws.k;
  if (cl.k > 1 && cl.cost >= 0 && (ws.cost < 0 || cl.cost < ws.cost * (1 - 1e-9))) out.k = cl.k, out.cluster = true;
  return out;
}

}  // namespace quantcore::kernels
