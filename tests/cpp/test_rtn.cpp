#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "rtn.h"
#include "status.h"

using namespace quantcore::kernels;

namespace {

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<uint8_t> zeros;
};

Quantized run_rtn(const std::vector<float>& w, int64_t rows, int64_t cols, const RtnParams& p) {
  Quantized q;
  q.codes.resize(size_t(rows * cols));
  q.scales.resize(size_t(rows * cols / p.group_size));
  q.zeros.resize(q.scales.size());
  rtn_quantize_rows(w.data(), cols, p, q.codes.data(), q.scales.data(), q.zeros.data(), 0, rows);
  return q;
}

std::vector<float> random_weights(int64_t n, uint32_t seed, float outlier = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = d(rng);
  if (outlier != 0.f) w[size_t(n / 3)] = outlier;
  return w;
}

double squared_error(const std::vector<float>& w, const Quantized& q, int64_t cols, int64_t gs) {
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const size_t g = (i / size_t(cols)) * size_t(cols / gs) + (i % size_t(cols)) / size_t(gs);
    const double dq = (double(q.codes[i]) - q.zeros[g]) * q.scales[g];
    e += (dq - w[i]) * (dq - w[i]);
  }
  return e;
}

}  // namespace

TEST_CASE("RTN error is at most scale/2 inside the representable range") {
  const int64_t rows = 7, cols = 256;
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool sym : {true, false}) {
      for (int64_t gs : {32, 64, 128, 256}) {
        RtnParams p;
        p.bits = bits;
        p.symmetric = sym;
        p.group_size = gs;
        auto w = random_weights(rows * cols, uint32_t(bits * 7 + gs), 0.3f);
        auto q = run_rtn(w, rows, cols, p);
        const int maxq = (1 << bits) - 1;
        for (size_t i = 0; i < w.size(); ++i) {
          const size_t g = (i / cols) * (cols / gs) + (i % cols) / gs;
          const float s = q.scales[g];
          const int z = q.zeros[g];
          REQUIRE(q.codes[i] <= maxq);
          if (sym) REQUIRE(z == (maxq + 1) / 2);
          const float lo = float(0 - z) * s, hi = float(maxq - z) * s;
          const float dq = float(q.codes[i] - z) * s;
          if (w[i] >= lo && w[i] <= hi) {
            INFO("bits=" << bits << " sym=" << sym << " gs=" << gs << " i=" << i);
            REQUIRE(std::fabs(dq - w[i]) <= s * 0.5f + std::fabs(w[i]) * 2.5e-7f);  // + fp32 rounding of w
          }
        }
      }
    }
  }
}

TEST_CASE("asymmetric min/max covers the group's range up to half a step") {
  RtnParams p;
  p.bits = 4;
  p.symmetric = false;
  p.group_size = 64;
  auto w = random_weights(4 * 64, 3);
  auto q = run_rtn(w, 4, 64, p);
  for (size_t i = 0; i < w.size(); ++i) {
    const float s = q.scales[i / 64];
    const float dq = float(q.codes[i] - q.zeros[i / 64]) * s;
    REQUIRE(std::fabs(dq - w[i]) <= s * (1 + 1e-5f));
  }
}

TEST_CASE("MSE clip search never increases the error and lowers it with outliers") {
  const int64_t rows = 16, cols = 512;
  for (bool sym : {true, false}) {
    for (int bits : {3, 4}) {
      RtnParams p;
      p.bits = bits;
      p.symmetric = sym;
      p.group_size = 128;
      auto w = random_weights(rows * cols, uint32_t(11 + bits), 0.25f);
      auto plain = run_rtn(w, rows, cols, p);
      p.mse_clip = true;
      auto clipped = run_rtn(w, rows, cols, p);
      const double e_plain = squared_error(w, plain, cols, 128);
      const double e_clip = squared_error(w, clipped, cols, 128);
      INFO("sym=" << sym << " bits=" << bits << " plain=" << e_plain << " clip=" << e_clip);
      REQUIRE(e_clip <= e_plain);
      REQUIRE(e_clip < 0.95 * e_plain);  // Gaussian groups gain clearly from clipping
    }
  }
}

TEST_CASE("degenerate groups: all zeros and constants") {
  RtnParams p;
  p.bits = 4;
  p.group_size = 8;
  for (bool sym : {true, false}) {
    p.symmetric = sym;
    std::vector<float> w(16, 0.f);
    for (int i = 8; i < 16; ++i) w[size_t(i)] = -0.5f;
    auto q = run_rtn(w, 1, 16, p);
    for (int i = 0; i < 16; ++i) {
      const float dq = float(q.codes[size_t(i)] - q.zeros[size_t(i / 8)]) * q.scales[size_t(i / 8)];
      REQUIRE(std::isfinite(dq));
      REQUIRE(std::fabs(dq - w[size_t(i)]) <= q.scales[size_t(i / 8)] * 0.5f);
    }
    REQUIRE(q.scales[0] > 0.f);
  }
}

TEST_CASE("scales are rounded to the storage type before the codes are computed") {
  RtnParams p;
  p.bits = 4;
  p.group_size = 32;
  p.scale_type = ScaleType::kF16;
  auto w = random_weights(64, 5);
  auto q = run_rtn(w, 1, 64, p);
  for (float s : q.scales) REQUIRE(f16_to_f32(f32_to_f16(s)) == s);
  p.scale_type = ScaleType::kBF16;
  q = run_rtn(w, 1, 64, p);
  for (float s : q.scales) REQUIRE(bf16_to_f32(f32_to_bf16(s)) == s);
}

TEST_CASE("f16 scale overflow and bad parameters throw") {
  RtnParams p;
  p.scale_type = ScaleType::kF16;
  p.group_size = 4;
  std::vector<float> w = {1e6f, -1e6f, 0.f, 1.f};
  REQUIRE_THROWS_AS(run_rtn(w, 1, 4, p), KernelError);
  p.group_size = 3;
  REQUIRE_THROWS_AS(rtn_validate(p, 4), KernelError);
  p.group_size = 4;
  p.bits = 9;
  REQUIRE_THROWS_AS(rtn_validate(p, 4), KernelError);
}
