#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "qat_fake_quant.h"
#include "rtn.h"

using namespace quantcore::kernels;

namespace {

std::vector<float> random_matrix(int64_t rows, int64_t cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 0.1f);
  std::vector<float> w(size_t(rows * cols));
  for (auto& v : w) v = dist(gen);
  return w;
}

}  // namespace

TEST_CASE("fake quantization equals RTN quantize-then-dequantize for RTN's own grid", "[qat]") {
  const int64_t rows = 5, cols = 96;
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (int64_t group : {32, 96}) {
        const auto w = random_matrix(rows, cols, unsigned(bits * 10 + group));
        RtnParams p;
        p.bits = bits;
        p.symmetric = sym;
        p.group_size = group;
        const int64_t groups = cols / group;
        std::vector<uint8_t> codes(w.size()), zeros(size_t(rows * groups));
        std::vector<float> scales(size_t(rows * groups));
        rtn_quantize_rows(w.data(), cols, p, codes.data(), scales.data(), zeros.data(), 0, rows);
        std::vector<float> zf(zeros.begin(), zeros.end());
        FakeQuantGrid grid;
        grid.scale = scales.data();
        grid.zero = sym ? nullptr : zf.data();
        grid.group = group;
        grid.bits = bits;
        std::vector<float> y(w.size());
        qat_fake_quant_rows(w.data(), cols, grid, y.data(), 0, rows);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) {
            const size_t i = size_t(r * cols + c), g = size_t(r * groups + c / group);
            const float z = sym ? float(1 << (bits - 1)) : float(zeros[g]);
            REQUIRE(y[i] == (float(codes[i]) - z) * scales[g]);  // exact, not approximate
          }
      }
}

TEST_CASE("the backward is straight through inside the grid and LSQ for scale and zero", "[qat]") {
  // One group of four values, 2-bit codes 0..3, scale 1, zero 1: x = 0.4 and 1.2
  // are inside (codes 1 and 2), x = 5 clips to 3, x = -4 clips to 0.
  const std::vector<float> x = {0.4f, 1.2f, 5.f, -4.f}, gy = {1.f, 2.f, 3.f, 4.f};
  const float scale = 1.f, zero = 1.f;
  FakeQuantGrid grid;
  grid.scale = &scale;
  grid.zero = &zero;
  grid.group = 4;
  grid.bits = 2;
  std::vector<float> y(4), gx(4);
  float gs = 0.f, gz = 0.f;
  qat_fake_quant_rows(x.data(), 4, grid, y.data(), 0, 1);
  CHECK(y == std::vector<float>{0.f, 1.f, 2.f, -1.f});
  qat_fake_quant_backward_rows(gy.data(), x.data(), 4, grid, gx.data(), &gs, &gz, 0, 1);
  CHECK(gx == std::vector<float>{1.f, 2.f, 0.f, 0.f});
  // ds: inside round(v) - v: (0 - 0.4) * 1 + (1 - 1.2) * 2; clipped q - z: (3 - 1) * 3 + (0 - 1) * 4.
  CHECK(gs == Approx(-0.4f - 0.4f + 6.f - 4.f));
  // dz: clipped -s: -(3 + 4).
  CHECK(gz == Approx(-7.f));
}

TEST_CASE("a shared grid row serves every row", "[qat]") {
  const int64_t rows = 3, cols = 64;
  const auto w = random_matrix(rows, cols, 7);
  const std::vector<float> scale = {0.02f, 0.03f};
  FakeQuantGrid shared;
  shared.scale = scale.data();
  shared.row_per_row = false;
  shared.group = 32;
  shared.bits = 4;
  std::vector<float> full_scale;
  for (int64_t r = 0; r < rows; ++r) full_scale.insert(full_scale.end(), scale.begin(), scale.end());
  FakeQuantGrid per_row = shared;
  per_row.scale = full_scale.data();
  per_row.row_per_row = true;
  std::vector<float> a(w.size()), b(w.size());
  qat_fake_quant_rows(w.data(), cols, shared, a.data(), 0, rows);
  qat_fake_quant_rows(w.data(), cols, per_row, b.data(), 0, rows);
  CHECK(a == b);
}

TEST_CASE("a learnable grid is snapped to its stored form and its gradients scaled", "[qat]") {
  // Raw parameters: a scale that is not an fp16 value, a negative scale, a
  // fractional zero point and one out of range. Snapped, they must act as the
  // fp16-rounded scale (or the floor kMinLearnedScale) and the rounded, clamped
  // zero point.
  const int64_t cols = 8;
  const auto x = random_matrix(2, cols, 11);
  const std::vector<float> raw_scale = {0.0123456f, -0.5f}, raw_zero = {7.6f, 19.f};
  const float fp16_scale = f16_to_f32(f32_to_f16(raw_scale[0]));
  const std::vector<float> want_scale = {fp16_scale, kMinLearnedScale}, want_zero = {8.f, 15.f};
  FakeQuantGrid snapped;
  snapped.scale = raw_scale.data();
  snapped.zero = raw_zero.data();
  snapped.group = cols;
  snapped.bits = 4;
  snapped.snap = true;
  snapped.scale_type = ScaleType::kF16;
  snapped.grad_factor = 0.25f;
  FakeQuantGrid plain = snapped;
  plain.scale = want_scale.data();
  plain.zero = want_zero.data();
  plain.snap = false;
  plain.grad_factor = 1.f;
  std::vector<float> a(x.size()), b(x.size());
  qat_fake_quant_rows(x.data(), cols, snapped, a.data(), 0, 2);
  qat_fake_quant_rows(x.data(), cols, plain, b.data(), 0, 2);
  CHECK(a == b);
  std::vector<float> gy(x.size(), 1.f), gxa(x.size()), gxb(x.size()), gsa(2), gsb(2), gza(2), gzb(2);
  qat_fake_quant_backward_rows(gy.data(), x.data(), cols, snapped, gxa.data(), gsa.data(), gza.data(), 0, 2);
  qat_fake_quant_backward_rows(gy.data(), x.data(), cols, plain, gxb.data(), gsb.data(), gzb.data(), 0, 2);
  CHECK(gxa == gxb);
  for (int i = 0; i < 2; ++i) {
    CHECK(gsa[i] == gsb[i] * 0.25f);
    CHECK(gza[i] == gzb[i] * 0.25f);
  }
}
