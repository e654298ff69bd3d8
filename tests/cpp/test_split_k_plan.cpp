// pick_split_k, pick_split_k_by, plan_split_k and choose_split_sum (split_k_plan.h): the split-K
// count the CUDA GEMMs launch with, and which sum the wgmma GEMM's slices meet in.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>

#include "split_k_plan.h"

using quantcore::kernels::choose_split_sum;
using quantcore::kernels::pick_split_k;
using quantcore::kernels::pick_split_k_by;
using quantcore::kernels::plan_split_k;
using quantcore::kernels::split_k_cost;

namespace {

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

TEST_CASE("plan_split_k: a flat fixed cost gives pick_split_k's count, and its cost", "[split_k]") {
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
// growing with k for the 128-row ones) and the cluster sum.
auto ws_flat(double slot) {
  return [slot](int64_t) { return 2.0 + 2.0 * slot; };
}
auto ws_growing(double slot) {
  return [slot](int64_t k) { return 2.0 + slot * (1.1 + 0.52 * double(k)); };
}
auto cluster_cost(double slot) {
  return [slot](int64_t) { return 2.0 + slot; };
}

}  // namespace

TEST_CASE("choose_split_sum: the cluster sum where it is one wave and cheaper", "[split_k]") {
  const auto every = [](int64_t wave) { return [wave](int64_t) { return wave; }; };
  // 14336 x 4096 at 128 rows (56 tiles of 32 stages, one CTA an SM): 2 slices
  // either way, the cluster's sum is cheaper (43.2 against 50.8 us on the H100).
  auto c = choose_split_sum(56, 32, 132, every(132), 16, ws_growing(2.67), cluster_cost(2.67), 0);
  CHECK(c.k == 2);
  CHECK(c.cluster);
  // Clusters that need a second wave are not taken, even where the model
  // would rate them cheaper: 8192 x 8192 at 64 rows, where clusters of 4 keep
  // fewer than the 256 CTAs resident, stays with the workspace's 4 (32 against
  // 47.5 us).
  const auto short_of_4 = [](int64_t k) { return k == 4 ? int64_t(240) : int64_t(264); };
  c = choose_split_sum(64, 64, 264, short_of_4, 16, ws_flat(1.33), cluster_cost(1.33), 0);
  CHECK(c.k == 4);
  CHECK_FALSE(c.cluster);
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
