// plan_split_k and choose_split_sum (split_k_plan.h): the split-K count the wgmma GEMM launches
// with, and which sum its slices meet in.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>

#include "split_k_plan.h"

using quantcore::kernels::choose_split_sum;
using quantcore::kernels::plan_split_k;
using quantcore::kernels::split_k_cost;

namespace {

// plan_split_k's count with a flat fixed cost, and with the wave a function of k.
template <class WaveOf>
int pick_split_k_by(int64_t tiles, int64_t stages, WaveOf wave_of, int64_t cap, double fixed) {
  return plan_split_k(tiles, stages, wave_of, cap, [fixed](int64_t) { return fixed; }).k;
}
int pick_split_k(int64_t tiles, int64_t stages, int64_t wave, int64_t cap, double fixed) {
  return pick_split_k_by(tiles, stages, [wave](int64_t) { return wave; }, cap, fixed);
}

double launch_cost(int64_t tiles, int64_t stages, int64_t wave, int64_t k, double fixed) {
  return std::ceil(double(tiles * k) / double(wave)) * (double(stages) / double(k) + fixed);
}

}  // namespace

TEST_CASE("pick_split_k: degenerate inputs give one slice", "[split_k]") {
  CHECK(pick_split_k(0, 64, 264, 16, 2.0) == 1);
  CHECK(pick_split_k(64, 0, 264, 16, 2.0) == 1);
  CHECK(pick_split_k(64, 64, 0, 16, 2.0) == 1);
  CHECK(pick_split_k(64, 64, 264, 0, 2.0) == 1);
  CHECK(pick_split_k(64, 64, 264, 1, 2.0) == 1);
}

TEST_CASE("pick_split_k: the counts that were fastest on the H100", "[split_k]") {
  // qgemm_wg_cuda.cu's tiles on 132 SMs (benchmarks/RESULTS.md, thirteenth session).
  // 64 rows: 128-output tiles, 2 CTAs an SM, fixed cost 4.67 stages.
  CHECK(pick_split_k(224, 64, 264, 16, 4.67) == 1);   // 28672 x 8192: not 2 (1.7 waves)
  CHECK(pick_split_k(64, 64, 264, 16, 4.67) == 4);    // 8192 x 8192
  CHECK(pick_split_k(112, 32, 264, 16, 4.67) == 2);   // 14336 x 4096: not 3 (1.27 waves)
  CHECK(pick_split_k(32, 112, 264, 16, 4.67) == 8);   // 4096 x 14336
  // 16 rows: 4 CTAs an SM, fixed cost 3.33 stages.
  CHECK(pick_split_k(64, 64, 528, 16, 3.33) == 8);
  CHECK(pick_split_k(112, 32, 528, 16, 3.33) == 4);
  CHECK(pick_split_k(32, 112, 528, 16, 3.33) == 16);
  // 256 rows: two 128-row tiles by 256 outputs, 1 CTA an SM, fixed cost 7.33 stages.
  CHECK(pick_split_k(224, 64, 132, 16, 7.33) == 1);   // more tiles than CTA slots: no split
  CHECK(pick_split_k(64, 64, 132, 16, 7.33) == 2);
  CHECK(pick_split_k(112, 32, 132, 16, 7.33) == 1);
  CHECK(pick_split_k(32, 112, 132, 16, 7.33) == 4);
}

TEST_CASE("pick_split_k: a partial second wave is avoided unless it pays", "[split_k]") {
  // 3 slices would fill 336 of 264 slots: two waves of CTAs a third as long.
  CHECK(pick_split_k(112, 32, 264, 16, 2.0) == 2);
  // Ties go to fewer slices: with no fixed cost, 1 and 2 slices of a full wave cost the same.
  CHECK(pick_split_k(132, 64, 132, 16, 0.0) == 1);
  // Small layers on a big GPU take many slices, never more than the cap.
  CHECK(pick_split_k(4, 256, 528, 16, 2.0) == 16);
  CHECK(pick_split_k(4, 256, 528, 5, 2.0) == 5);
}

TEST_CASE("pick_split_k: the least cost, the fewest slices among equals", "[split_k]") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t tiles = 1 + rng() % 600, stages = 1 + rng() % 500, wave = 1 + rng() % 1100;
    const int64_t cap = 1 + rng() % 16;
    const double fixed = double(rng() % 1000) / 100.0;
    const int k = pick_split_k(tiles, stages, wave, cap, fixed);
    REQUIRE(k >= 1);
    REQUIRE(k <= cap);
    const double best = launch_cost(tiles, stages, wave, k, fixed);
    for (int64_t j = 1; j <= cap; ++j) {
      const double c = launch_cost(tiles, stages, wave, j, fixed);
      if (j < k) REQUIRE(c > best * (1 - 1e-9));  // a smaller count is strictly worse
      else REQUIRE(c >= best * (1 - 1e-9));
    }
  }
}

TEST_CASE("pick_split_k_by: a constant wave gives pick_split_k's count", "[split_k]") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 500; ++trial) {
    const int64_t tiles = 1 + rng() % 600, stages = 1 + rng() % 500, wave = 1 + rng() % 1100;
    const int64_t cap = 1 + rng() % 16;
    const double fixed = double(rng() % 1000) / 100.0;
    REQUIRE(pick_split_k_by(tiles, stages, [wave](int64_t) { return wave; }, cap, fixed) ==
            pick_split_k(tiles, stages, wave, cap, fixed));
  }
}

TEST_CASE("pick_split_k_by: counts that cannot run are skipped", "[split_k]") {
  // 64 tiles of 64 stages on 528 slots: 8 slices fill the wave exactly...
  const auto all = [](int64_t) { return int64_t(528); };
  CHECK(pick_split_k_by(64, 64, all, 16, 3.33) == 8);
  // ...unless clusters of 8 cannot launch (0 resident): the best of the others.
  const auto no8 = [](int64_t k) { return k == 8 ? int64_t(0) : int64_t(528); };
  const int k = pick_split_k_by(64, 64, no8, 16, 3.33);
  CHECK(k != 8);
  CHECK(k == pick_split_k_by(64, 64, [](int64_t k) { return k >= 8 ? int64_t(1) : int64_t(528); }, 7, 3.33));
  // No cluster of any size: one slice.
  CHECK(pick_split_k_by(64, 64, [](int64_t k) { return k == 1 ? int64_t(528) : int64_t(0); }, 16, 0.0) == 1);
}

TEST_CASE("pick_split_k_by: clusters that leave slots empty count as a smaller wave", "[split_k]") {
  // 32 tiles of 112 stages. With 528 CTAs resident at every count, 16 slices
  // (512 CTAs, one wave) win; if clusters of more than 8 only keep 256
  // resident, 9-16 slices take two waves and 8 (256 CTAs, one wave) win.
  const auto flat = [](int64_t) { return int64_t(528); };
  CHECK(pick_split_k_by(32, 112, flat, 16, 3.33) == 16);
  const auto gpc = [](int64_t k) { return k > 8 ? int64_t(256) : int64_t(528); };
  CHECK(pick_split_k_by(32, 112, gpc, 16, 3.33) == 8);
}

TEST_CASE("plan_split_k: the count a plain search finds, and its cost", "[split_k]") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t tiles = 1 + rng() % 300, stages = 1 + rng() % 300, wave = 1 + rng() % 600, cap = 1 + rng() % 16;
    const double fixed = double(rng() % 800) / 100.0;
    const auto c = plan_split_k(tiles, stages, [wave](int64_t) { return wave; }, cap, [fixed](int64_t) { return fixed; });
    REQUIRE(c.k == pick_split_k(tiles, stages, wave, cap, fixed));
    REQUIRE(c.cost == split_k_cost(tiles, stages, c.k, wave, fixed));
    REQUIRE(c.cost == Approx(launch_cost(tiles, stages, wave, c.k, fixed)));
  }
  CHECK(split_k_cost(4, 8, 2, 0, 1.0) < 0);  // no wave: cannot run
}

TEST_CASE("plan_split_k: a sum that reads every slice back takes fewer slices", "[split_k]") {
  // 4 tiles of 256 stages on 132 CTA slots: at a flat 7.33 stages 16 slices
  // win; where the last CTA reads all k slots (the 128-row tiles' workspace
  // sum: 2 + 2.67 x (1.1 + 0.52 k)) fewer do.
  const auto wave = [](int64_t) { return int64_t(132); };
  CHECK(plan_split_k(4, 256, wave, 16, [](int64_t) { return 7.33; }).k == 16);
  const int k = plan_split_k(4, 256, wave, 16, [](int64_t k) { return 2 + 2.67 * (1.1 + 0.52 * double(k)); }).k;
  CHECK(k > 8);
  CHECK(k < 16);
}

namespace {

// The wgmma GEMM's fixed costs (qgemm_wg_cuda.cu), in stages, for a slot of
// `slot` stages' bytes: the workspace sum (flat for the one-warpgroup tiles,
// growing with k for the 128-row ones) and the cluster sum; one slice has none.
auto ws_flat(double slot) {
  return [slot](int64_t k) { return k == 1 ? 2.0 : 2.0 + 2.0 * slot; };
}
auto ws_growing(double slot) {
  return [slot](int64_t k) { return k == 1 ? 2.0 : 2.0 + slot * (1.1 + 0.52 * double(k)); };
}
auto cluster_cost(double slot) {
  return [slot](int64_t k) { return k == 1 ? 2.0 : 2.0 + slot; };
}

}  // namespace

TEST_CASE("choose_split_sum: the cluster sum where it is one wave and cheaper", "[split_k]") {
  const auto every = [](int64_t wave) { return [wave](int64_t) { return wave; }; };
  // 14336 x 4096 at 128 rows (56 tiles of 32 stages, one CTA an SM): 2 slices
  // either way, the cluster's sum is cheaper (43.2 against 50.8 us on the H100).
  auto c = choose_split_sum(56, 32, 132, every(132), 16, ws_growing(2.67), cluster_cost(2.67), 0);
  CHECK(c.k == 2);
  CHECK(c.cluster);
  // 8192 x 8192 at 64 rows: clusters of 4 keep fewer than the 256 CTAs
  // resident, so the workspace's 4 (32 against 47.5 us on the H100).
  const auto short_of_4 = [](int64_t k) { return k == 4 ? int64_t(240) : int64_t(264); };
  c = choose_split_sum(64, 64, 264, short_of_4, 16, ws_flat(1.33), cluster_cost(1.33), 0);
  CHECK(c.k == 4);
  CHECK_FALSE(c.cluster);
  // Clusters that need a second wave are not taken even where the model rates
  // them cheaper: 100 tiles, 5 clustered slices in two waves (32.3) against the
  // workspace's 5 (34.9); the one-wave clustered 2 (35.3) loses.
  c = choose_split_sum(100, 64, 264, short_of_4, 16, ws_flat(1.33), cluster_cost(1.33), 0);
  CHECK(c.k == 5);
  CHECK_FALSE(c.cluster);
  CHECK(split_k_cost(100, 64, 5, 264, 2 + 1.33) < split_k_cost(100, 64, 5, 264, 2 + 2 * 1.33));
  // One slice needs no sum.
  c = choose_split_sum(224, 64, 264, every(264), 16, ws_flat(1.33), cluster_cost(1.33), 0);
  CHECK(c.k == 1);
  CHECK_FALSE(c.cluster);
  // Equal costs keep the workspace.
  c = choose_split_sum(56, 32, 132, every(132), 16, ws_flat(1.0), ws_flat(1.0), 0);
  CHECK_FALSE(c.cluster);
  // No GPU room for clusters at all: the workspace.
  c = choose_split_sum(56, 32, 132, every(0), 16, ws_growing(2.67), cluster_cost(2.67), 0);
  CHECK(c.k == 2);
  CHECK_FALSE(c.cluster);
}

TEST_CASE("choose_split_sum: a forced count is kept, only the sum is chosen", "[split_k]") {
  const auto fits_but_9 = [](int64_t k) { return k == 9 ? int64_t(0) : int64_t(132); };
  auto c = choose_split_sum(8, 64, 132, fits_but_9, 16, ws_growing(2.67), cluster_cost(2.67), 9);
  CHECK(c.k == 9);
  CHECK_FALSE(c.cluster);  // 9 slices' reduce-scatter does not fit
  c = choose_split_sum(8, 64, 132, fits_but_9, 16, ws_growing(2.67), cluster_cost(2.67), 8);
  CHECK(c.k == 8);
  CHECK(c.cluster);
  c = choose_split_sum(8, 64, 132, fits_but_9, 16, ws_growing(2.67), cluster_cost(2.67), 1);
  CHECK(c.k == 1);
  CHECK_FALSE(c.cluster);
  // 40 clusters of 8 are more than one wave: the workspace.
  c = choose_split_sum(40, 64, 132, fits_but_9, 16, ws_growing(2.67), cluster_cost(2.67), 8);
  CHECK(c.k == 8);
  CHECK_FALSE(c.cluster);
}

TEST_CASE("choose_split_sum: the H100's picks on the issue shapes", "[split_k]") {
  // CTAs resident by cluster size (index k; 1 = no cluster) for the 16-, 32-,
  // 64- and 128-row tiles, as cudaOccupancyMaxActiveClusters reported them on
  // the H100 (`wgh waves`, benchmarks/RESULTS.md, sixteenth session), and the
  // count and sum the planner ran there, each the faster sum or within noise.
  const int64_t waves[4][17] = {{0, 528, 528, 489, 496, 470, 474, 483, 496, 459, 440, 407, 444, 390, 420, 420, 448},
                                {0, 396, 396, 372, 368, 345, 372, 329, 360, 333, 300, 308, 336, 299, 294, 315, 336},
                                {0, 264, 264, 237, 248, 235, 234, 224, 240, 207, 210, 176, 192, 182, 196, 210, 224},
                                {0, 132, 132, 117, 120, 110, 102, 105, 120, 81, 70, 77, 84, 91, 98, 105, 112}};
  const int rows[4] = {16, 32, 64, 128};
  const double slot[4] = {8192.0 / 12288, 1.0, 32768.0 / 24576, 131072.0 / 49152};  // slot bytes / stage bytes
  struct Case {
    int64_t n, k;
    int m;
    int splits;
    bool cluster;
  };
  const Case cases[] = {
      {28672, 8192, 16, 2, true},   {28672, 8192, 32, 5, false},  {28672, 8192, 64, 1, false},
      {28672, 8192, 128, 1, false}, {28672, 8192, 256, 1, false}, {8192, 8192, 16, 8, false},
      {8192, 8192, 32, 6, false},   {8192, 8192, 64, 4, false},   {8192, 8192, 128, 3, true},
      {8192, 8192, 256, 2, true},   {14336, 4096, 16, 4, true},   {14336, 4096, 32, 3, true},
      {14336, 4096, 64, 2, true},   {14336, 4096, 128, 2, true},  {14336, 4096, 256, 1, false},
      {4096, 14336, 16, 16, false}, {4096, 14336, 32, 12, false}, {4096, 14336, 64, 8, false},
      {4096, 14336, 128, 6, true},  {4096, 14336, 256, 4, false},
  };
  for (const Case& c : cases) {
    const int t = c.m <= 16 ? 0 : c.m <= 32 ? 1 : c.m <= 64 ? 2 : 3;
    const int64_t cta_n = t == 3 ? 256 : 128;
    const int64_t tiles = ((c.m + rows[t] - 1) / rows[t]) * ((c.n + cta_n - 1) / cta_n), stages = c.k / 128;
    // 9, 12 and 15 slices' reduce-scatter does not fit the 128-row tiles (16-bit scales).
    const auto cluster_wave = [&](int64_t k) -> int64_t {
      return t == 3 && (k == 9 || k == 12 || k == 15) ? 0 : waves[t][k];
    };
    const auto ws = t == 3 ? std::function<double(int64_t)>(ws_growing(slot[t]))
                           : std::function<double(int64_t)>(ws_flat(slot[t]));
    const auto pick = choose_split_sum(tiles, stages, waves[t][1], cluster_wave, std::min<int64_t>(16, stages / 2),
                                       ws, cluster_cost(slot[t]), 0);
    INFO(c.n << " x " << c.k << " at " << c.m << " rows");
    CHECK(pick.k == c.splits);
    CHECK(pick.cluster == c.cluster);
  }
}
