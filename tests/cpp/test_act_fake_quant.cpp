#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "act_fake_quant.h"
#include "rtn.h"

using namespace quantcore::kernels;

TEST_CASE("per-token fake quantization equals RTN per row, then dequantization", "[act]") {
  std::mt19937 gen(3);
  std::normal_distribution<float> dist(0.f, 2.f);
  for (int64_t cols : {1, 7, 64, 200})
    for (int bits : {4, 8})
      for (bool sym : {true, false}) {
        const int64_t rows = 5;
        std::vector<float> x(size_t(rows * cols));
        for (auto& v : x) v = dist(gen) + (sym ? 0.f : 1.5f);  // asymmetric rows: mostly positive
        x[0] = 0.f;  // exact zeros and an all-zero row are legal
        if (cols > 1) std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.f);
        RtnParams p;
        p.bits = bits;
        p.symmetric = sym;
        p.group_size = cols;
        std::vector<uint8_t> codes(x.size()), zeros(static_cast<size_t>(rows));
        std::vector<float> scales(static_cast<size_t>(rows)), y(x.size());
        rtn_quantize_rows(x.data(), cols, p, codes.data(), scales.data(), zeros.data(), 0, rows);
        fake_quant_per_token_rows(x.data(), cols, bits, sym, y.data(), 0, rows);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) {
            const size_t i = size_t(r * cols + c);
            REQUIRE(y[i] == (float(codes[i]) - float(zeros[size_t(r)])) * scales[size_t(r)]);
          }
      }
}

TEST_CASE("a per-token row holding NaN or Inf comes back NaN; the other rows are unaffected", "[act]") {
  std::vector<float> x = {1.f, 2.f, -3.f, 0.5f, 1.f, INFINITY, 2.f, NAN, 0.25f, -0.5f, 0.75f, 1.f};
  std::vector<float> y(x.size()), clean(4);
  fake_quant_per_token_rows(x.data(), 4, 8, true, y.data(), 0, 3);
  for (int i = 4; i < 8; ++i) CHECK(std::isnan(y[size_t(i)]));
  fake_quant_per_token_rows(x.data() + 8, 4, 8, true, clean.data(), 0, 1);
  for (int i = 0; i < 4; ++i) {
    CHECK(std::isfinite(y[size_t(i)]));
    CHECK(y[size_t(8 + i)] == clean[size_t(i)]);
  }
}
