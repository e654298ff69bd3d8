#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "float_convert.h"
#include "gguf/ggml_dequantize.h"
#include "gguf/ggml_quant_search.h"
#include "gguf/ggml_quantize.h"
#include "gguf/ggml_types.h"
#include "status.h"

using namespace quantcore::kernels;
using namespace quantcore::kernels::gguf;

namespace {

std::vector<float> gaussian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += double(a[i] - b[i]) * (a[i] - b[i]);
    ref += double(b[i]) * b[i];
  }
  return std::sqrt(err / ref);
}

}  // namespace

TEST_CASE("nearest_int rounds half to even, as ggml's magic-number trick") {
  CHECK(nearest_int(0.5f) == 0);
  CHECK(nearest_int(1.5f) == 2);
  CHECK(nearest_int(2.5f) == 2);
  CHECK(nearest_int(-0.5f) == 0);
  CHECK(nearest_int(-1.5f) == -2);
  CHECK(nearest_int(3.49f) == 3);
  CHECK(nearest_int(-70.6f) == -71);
}

TEST_CASE("type sizes are ggml's") {
  CHECK(type_size(uint32_t(GgmlType::Q4_K)).block_bytes == 144);
  CHECK(type_size(uint32_t(GgmlType::Q6_K)).block_elems == 256);
  CHECK(type_size(uint32_t(GgmlType::BF16)).block_bytes == 2);
  CHECK(type_size(4).block_elems == 0);   // retired Q4_2
  CHECK(type_size(99).block_elems == 0);
}

TEST_CASE("a hand-built Q4_0 block dequantizes to d * (q - 8), element i low, i + 16 high nibble") {
  BlockQ4_0 blk;
  blk.d = f32_to_f16(0.5f);
  for (int i = 0; i < 16; ++i) blk.qs[i] = uint8_t(i | ((15 - i) << 4));
  float y[32];
  dequantize_row(uint32_t(GgmlType::Q4_0), reinterpret_cast<const uint8_t*>(&blk), y, 32);
  for (int i = 0; i < 16; ++i) {
    CHECK(y[i] == 0.5f * float(i - 8));
    CHECK(y[i + 16] == 0.5f * float(7 - i));
  }
}

TEST_CASE("every block type round-trips Gaussian rows within its error bound") {
  const std::vector<std::pair<GgmlType, double>> bounds = {
      {GgmlType::Q8_0, 0.006}, {GgmlType::Q6_K, 0.02}, {GgmlType::Q5_0, 0.045}, {GgmlType::Q5_1, 0.04},
      {GgmlType::Q5_K, 0.04},  {GgmlType::Q4_0, 0.09}, {GgmlType::Q4_1, 0.08},  {GgmlType::Q4_K, 0.075},
      {GgmlType::Q3_K, 0.16},  {GgmlType::Q2_K, 0.31}};
  const int64_t n = 1024;
  const std::vector<float> x = gaussian(n, 7);
  for (const auto& [type, bound] : bounds) {
    const TypeSize ts = type_size(uint32_t(type));
    std::vector<uint8_t> bytes(static_cast<size_t>(n / ts.block_elems * ts.block_bytes));
    std::vector<float> y(static_cast<size_t>(n));
    quantize_row(uint32_t(type), x.data(), bytes.data(), n, nullptr);
    dequantize_row(uint32_t(type), bytes.data(), y.data(), n);
    INFO("type " << uint32_t(type));
    CHECK(rel_rmse(y, x) < bound);
  }
}

TEST_CASE("an all-zero row quantizes to zeros for every type") {
  const std::vector<float> x(512, 0.f);
  for (uint32_t t : {2u, 3u, 6u, 7u, 8u, 10u, 11u, 12u, 13u, 14u}) {
    const TypeSize ts = type_size(t);
    std::vector<uint8_t> bytes(static_cast<size_t>(512 / ts.block_elems * ts.block_bytes));
    std::vector<float> y(512, 1.f);
    quantize_row(t, x.data(), bytes.data(), 512, nullptr);
    dequantize_row(t, bytes.data(), y.data(), 512);
    for (float v : y) CHECK(v == 0.f);
  }
}

TEST_CASE("bad arguments throw KernelError instead of writing garbage") {
  std::vector<float> x(256, 1.f);
  std::vector<uint8_t> out(1024);
  CHECK_THROWS_AS(quantize_row(12, x.data(), out.data(), 100, nullptr), KernelError);  // not a multiple of 256
  CHECK_THROWS_AS(quantize_row(4, x.data(), out.data(), 256, nullptr), KernelError);   // retired type
  CHECK_THROWS_AS(quantize_row(1, x.data(), out.data(), 256, nullptr), KernelError);   // F16: not a block type
  x[3] = std::nanf("");
  CHECK_THROWS_AS(quantize_row(8, x.data(), out.data(), 256, nullptr), KernelError);
  std::vector<float> y(256);
  CHECK_THROWS_AS(dequantize_row(99, out.data(), y.data(), 256), KernelError);
}
