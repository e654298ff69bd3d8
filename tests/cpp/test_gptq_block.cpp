// The GPTQ block kernel against a plain transcription of the reference loop
// (IST-DASLab/gptq fasterquant, one block): codes identical, errors and
// updated weights equal to the last bit (same operations, no FMA).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "gptq_block.h"
#include "rtn.h"

using namespace quantcore::kernels;

namespace {

struct Problem {
  int64_t rows, count, ld_w, grids;
  std::vector<float> w, hinv, scales, zeros;
  std::vector<int32_t> grid_of;
};

// Weights of a wider matrix (ld_w > count), an upper-triangular factor with a
// positive diagonal, and per-row grids from RTN's min/max rule.
Problem make_problem(int64_t rows, int64_t count, int64_t group, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Problem p{rows, count, count + 5, (count + group - 1) / group, {}, {}, {}, {}, {}};
  p.w.resize(size_t(rows * p.ld_w));
  for (auto& v : p.w) v = 0.05f * nd(rng);
  p.hinv.assign(size_t(count * count), 0.f);
  for (int64_t i = 0; i < count; ++i) {
    p.hinv[size_t(i * count + i)] = 0.5f + std::fabs(nd(rng));
    for (int64_t j = i + 1; j < count; ++j) p.hinv[size_t(i * count + j)] = 0.1f * nd(rng);
  }
  RtnParams rp;
  rp.bits = bits;
  rp.symmetric = false;
  p.scales.resize(size_t(rows * p.grids));
  p.zeros.resize(p.scales.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < p.grids; ++g) {
      const int64_t n = std::min(group, count - g * group);
      int z = 0;
      rp.group_size = n;
      rtn_group_grid(&p.w[size_t(r * p.ld_w + g * group)], n, rp, &p.scales[size_t(r * p.grids + g)], &z);
      p.zeros[size_t(r * p.grids + g)] = float(z);
    }
  for (int64_t i = 0; i < count; ++i) p.grid_of.push_back(int32_t(i / group));
  return p;
}

}  // namespace

TEST_CASE("gptq block kernel equals the reference loop", "[gptq]") {
  const int bits = GENERATE(2, 3, 4, 8);
  const int64_t rows = GENERATE(1, 7, 33);
  const int64_t count = GENERATE(1, 17, 64);
  Problem p = make_problem(rows, count, 16, bits, uint32_t(bits * 1000 + rows * 10 + count));
  const float maxq = float((1 << bits) - 1);

  // Reference: column by column over all rows, as the Python code does.
  std::vector<float> w_ref = p.w;
  std::vector<uint8_t> q_ref(size_t(rows * count));
  std::vector<float> e_ref(size_t(rows * count));
  double loss_ref = 0;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t r = 0; r < rows; ++r) {
      const float s = p.scales[size_t(r * p.grids + p.grid_of[size_t(i)])];
      const float z = p.zeros[size_t(r * p.grids + p.grid_of[size_t(i)])];
      const float x = w_ref[size_t(r * p.ld_w + i)];
      const float q = std::min(std::max(std::nearbyint(x / s) + z, 0.f), maxq);
      volatile float prod = (q - z) * s;  // rounded before the subtraction
      const float e = (x - prod) / p.hinv[size_t(i * count + i)];
      q_ref[size_t(r * count + i)] = uint8_t(q);
      e_ref[size_t(r * count + i)] = e;
      loss_ref += double(e) * e;
      for (int64_t j = i + 1; j < count; ++j) {
        volatile float upd = e * p.hinv[size_t(i * count + j)];
        w_ref[size_t(r * p.ld_w + j)] -= upd;
      }
    }

  std::vector<uint8_t> q(size_t(rows * (count + 3)), 0xAB);  // ld_codes > count: padding untouched
  std::vector<float> e(size_t(rows * count));
  GptqBlock b;
  b.w = p.w.data();
  b.ld_w = p.ld_w;
  b.count = count;
  b.hinv = p.hinv.data();
  b.ld_h = count;
  b.scales = p.scales.data();
  b.zeros = p.zeros.data();
  b.ld_grid = p.grids;
  b.grid_of = p.grid_of.data();
  b.bits = bits;
  b.codes = q.data();
  b.ld_codes = count + 3;
  b.err = e.data();
  b.ld_err = count;
  // Two row ranges, as threads would split them.
  const double loss = gptq_block_rows(b, 0, rows / 2) + gptq_block_rows(b, rows / 2, rows);

  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < count; ++i) {
      REQUIRE(q[size_t(r * (count + 3) + i)] == q_ref[size_t(r * count + i)]);
      REQUIRE(e[size_t(r * count + i)] == e_ref[size_t(r * count + i)]);
      REQUIRE(p.w[size_t(r * p.ld_w + i)] == w_ref[size_t(r * p.ld_w + i)]);
    }
    for (int64_t i = count; i < count + 3; ++i) REQUIRE(q[size_t(r * (count + 3) + i)] == 0xAB);
    for (int64_t i = count; i < p.ld_w; ++i) REQUIRE(p.w[size_t(r * p.ld_w + i)] == w_ref[size_t(r * p.ld_w + i)]);
  }
  REQUIRE(loss == Approx(loss_ref).epsilon(1e-12));
}
