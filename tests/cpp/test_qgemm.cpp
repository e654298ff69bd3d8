#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "cpu_features.h"
#include "dequant.h"
#include "float_convert.h"
#include "qgemm.h"
#include "status.h"

using namespace quantcore::kernels;

namespace {

struct Case {
  int64_t M, N, K, gs;
  int bits;
  bool asym;
  bool bias;
};

struct Data {
  std::vector<uint8_t> qweight, zeros;
  std::vector<float> scales, bias, x;
  QGemmProblem p;
};

Data make_data(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  Data d;
  const int64_t G = c.K / c.gs;
  d.qweight.resize(size_t(c.N * c.K * c.bits / 8));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : d.qweight) b = uint8_t(byte(rng));
  std::uniform_real_distribution<float> sd(0.001f, 0.02f);
  d.scales.resize(size_t(c.N * G));
  for (auto& s : d.scales) s = sd(rng);
  if (c.asym) {
    std::uniform_int_distribution<int> zd(0, (1 << c.bits) - 1);
    d.zeros.resize(size_t(c.N * G));
    for (auto& z : d.zeros) z = uint8_t(zd(rng));
  }
  std::normal_distribution<float> nd(0.f, 1.f);
  d.x.resize(size_t(c.M * c.K));
  for (auto& v : d.x) v = nd(rng);
  if (c.M > 0 && c.K > 3) d.x[2] = 40.f;  // an outlier channel
  if (c.bias) {
    d.bias.resize(size_t(c.N));
    for (auto& b : d.bias) b = nd(rng);
  }
  d.p.M = c.M;
  d.p.N = c.N;
  d.p.K = c.K;
  d.p.bits = c.bits;
  d.p.group_size = c.gs;
  d.p.qweight = d.qweight.data();
  d.p.scales = d.scales.data();
  d.p.zeros = c.asym ? d.zeros.data() : nullptr;
  d.p.bias = c.bias ? d.bias.data() : nullptr;
  return d;
}

// |y - ref| <= rtol * sum_k |x w| + atol: the scale of rounding any fp32 dot product.
double abs_dot_bound(const Data& d, int64_t m, int64_t n) {
  const QGemmProblem& p = d.p;
  const int64_t G = p.K / p.group_size, rb = p.K * p.bits / 8;
  double s = 0;
  for (int64_t k = 0; k < p.K; ++k) {
    const uint8_t* row = p.qweight + n * rb;
    int q = p.bits == 8 ? row[k] : (k & 1 ? row[k / 2] >> 4 : row[k / 2] & 0xf);
    int z = p.zeros ? p.zeros[n * G + k / p.group_size] : (1 << (p.bits - 1));
    s += std::fabs(double(d.x[size_t(m * p.K + k)]) * (q - z) * p.scales[size_t(n * G + k / p.group_size)]);
  }
  return s;
}

void check_against_reference(const Case& c, Isa isa, QGemmPath path, DType xt) {
  Data d = make_data(c, uint32_t(c.M * 131 + c.N * 7 + c.K + c.bits));
  // Round x to the activation type first so the reference sees the same input.
  std::vector<uint16_t> x16(d.x.size());
  for (size_t i = 0; i < d.x.size(); ++i) {
    if (xt == DType::kF16) {
      x16[i] = f32_to_f16(d.x[i]);
      d.x[i] = f16_to_f32(x16[i]);
    } else if (xt == DType::kBF16) {
      x16[i] = f32_to_bf16(d.x[i]);
      d.x[i] = bf16_to_f32(x16[i]);
    }
  }
  std::vector<float> ref(size_t(c.M * c.N));
  qgemm_reference(d.p, d.x.data(), ref.data());
  std::vector<float> y(size_t(c.M * c.N));
  std::vector<uint16_t> y16(size_t(c.M * c.N));
  const void* xin = xt == DType::kF32 ? static_cast<const void*>(d.x.data()) : x16.data();
  void* yout = xt == DType::kF32 ? static_cast<void*>(y.data()) : y16.data();
  if (!qgemm_path_supported(d.p, isa, path, xt)) return;
  qgemm(d.p, isa, path, xin, xt, yout, xt);
  const double out_rtol = xt == DType::kF32 ? 0 : xt == DType::kF16 ? 1.0 / 1024 : 1.0 / 128;
  for (int64_t m = 0; m < c.M; ++m) {
    for (int64_t n = 0; n < c.N; ++n) {
      const size_t i = size_t(m * c.N + n);
      float got = y[i];
      if (xt == DType::kF16) got = f16_to_f32(y16[i]);
      if (xt == DType::kBF16) got = bf16_to_f32(y16[i]);
      const double tol = 2e-6 * abs_dot_bound(d, m, n) + out_rtol * std::fabs(ref[i]) + 1e-6;
      INFO("isa=" << isa_name(isa) << " path=" << qgemm_path_name(path) << " M=" << c.M << " N=" << c.N << " K=" << c.K
                  << " gs=" << c.gs << " bits=" << c.bits << " asym=" << c.asym
                  << " xtype=" << int(xt) << " m=" << m << " n=" << n);
      REQUIRE(std::fabs(got - ref[i]) <= tol);
    }
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

}  // namespace

TEST_CASE("every supported qgemm kernel matches the reference on odd shapes") {
  const std::vector<Case> cases = {
      {1, 1, 32, 32, 4, false, false},    {1, 7, 64, 32, 4, true, true},
      {3, 5, 96, 32, 4, false, true},     {5, 33, 128, 64, 4, true, false},
      {1, 17, 256, 128, 4, true, true},   {9, 19, 512, 256, 4, false, true},
      {2, 3, 50, 50, 4, true, false},     {4, 6, 78, 78, 4, false, false},   // per-channel, ragged
      {1, 13, 128, 128, 8, false, true},  {6, 9, 96, 32, 8, true, true},
      {3, 4, 100, 100, 8, true, false},   {7, 21, 320, 64, 8, false, false},
      {17, 11, 192, 64, 4, true, true},   {0, 4, 64, 64, 4, false, false},
      {13, 70, 1280, 1280, 4, true, true},  // per-channel group wider than a tile block
      {6, 65, 1088, 32, 8, true, true},     // many small groups per block, N tail
      {5, 130, 2048, 128, 4, false, true},
  };
  for (Isa isa : supported_isas())
    for (QGemmPath path : {QGemmPath::kRowsF32, QGemmPath::kRowsBf16, QGemmPath::kTilesBf16})
      for (const Case& c : cases)
        for (DType xt : {DType::kF32, DType::kF16, DType::kBF16})
          check_against_reference(c, isa, path, xt);
}

TEST_CASE("the bf16-plane kernel is exact for bf16 activations") {
  if (!isa_supported(Isa::kAvx512Bf16)) return;
  // With integer-valued scales, small integer x and few terms every partial sum
  // is an exact integer, so any rounding shows up as a mismatch.
  Case c{2, 8, 64, 32, 4, true, false};
  Data d = make_data(c, 99);
  for (auto& s : d.scales) s = 1.f;
  std::vector<uint16_t> x16(d.x.size());
  for (size_t i = 0; i < d.x.size(); ++i) {
    d.x[i] = float(int(i % 7) - 3);
    x16[i] = f32_to_bf16(d.x[i]);
  }
  std::vector<float> ref(16), y(16);
  qgemm_reference(d.p, d.x.data(), ref.data());
  std::vector<float> xf(d.x);
  qgemm(d.p, Isa::kAvx512Bf16, QGemmPath::kRowsBf16, xf.data(), DType::kF32, y.data(), DType::kF32);
  REQUIRE(y == ref);
  std::vector<uint16_t> xb(d.x.size());
  for (size_t i = 0; i < d.x.size(); ++i) xb[i] = f32_to_bf16(d.x[i]);
  qgemm(d.p, Isa::kAvx512Bf16, QGemmPath::kTilesBf16, xb.data(), DType::kBF16, y.data(), DType::kF32);
  REQUIRE(y == ref);
}

TEST_CASE("qgemm rejects malformed problems") {
  QGemmProblem p;
  std::vector<uint8_t> w(64);
  std::vector<float> s(4);
  p.M = 1;
  p.N = 1;
  p.K = 64;
  p.qweight = w.data();
  p.scales = s.data();
  p.group_size = 48;
  REQUIRE_THROWS_AS(qgemm_validate(p), KernelError);
  p.group_size = 32;
  p.bits = 3;
  REQUIRE_THROWS_AS(qgemm_validate(p), KernelError);
  p.bits = 4;
  REQUIRE_NOTHROW(qgemm_validate(p));
}

TEST_CASE("path selection follows M and the activation type") {
  QGemmProblem p;
  p.K = 64;
  p.N = 8;
  p.group_size = 64;
  p.M = 1;
  REQUIRE(qgemm_choose_path(p, Isa::kScalar, DType::kF32) == QGemmPath::kRowsF32);
  REQUIRE(qgemm_path_supported(p, Isa::kScalar, QGemmPath::kRowsF32, DType::kF32));
  if (isa_supported(Isa::kAvx512Bf16)) {
    REQUIRE(qgemm_choose_path(p, Isa::kAvx512Bf16, DType::kBF16) == QGemmPath::kRowsBf16);
    p.M = 64;
    REQUIRE(qgemm_choose_path(p, Isa::kAvx512Bf16, DType::kBF16) == QGemmPath::kTilesBf16);
    REQUIRE(qgemm_choose_path(p, Isa::kAvx512Bf16, DType::kF32) == QGemmPath::kTilesBf16);
    p.M = 8;
    REQUIRE(qgemm_choose_path(p, Isa::kAvx512Bf16, DType::kF32) == QGemmPath::kRowsF32);
    qgemm_force_path("rows_bf16");
    REQUIRE(qgemm_choose_path(p, Isa::kAvx512Bf16, DType::kBF16) == QGemmPath::kRowsBf16);
    qgemm_force_path("auto");
    REQUIRE_THROWS_AS(qgemm_force_path("nope"), KernelError);
    REQUIRE(qgemm_path_supported(p, Isa::kAvx512Bf16, QGemmPath::kTilesBf16, DType::kF32));
  }
}

TEST_CASE("ISA selection and override") {
  REQUIRE(isa_supported(Isa::kScalar));
  REQUIRE(isa_supported(best_supported_isa()));
  REQUIRE(parse_isa("avx2") == Isa::kAvx2);
  REQUIRE_THROWS_AS(parse_isa("sse9"), KernelError);
  set_isa_override(Isa::kScalar);
  REQUIRE(active_isa() == Isa::kScalar);
  set_isa_override(best_supported_isa());
  REQUIRE(active_isa() == best_supported_isa());
}

TEST_CASE("dequantize_rows matches the reference dequantization") {
  for (const Case& c : {Case{1, 9, 96, 32, 4, true, false}, Case{1, 5, 100, 100, 8, false, false},
                        Case{1, 7, 256, 64, 8, true, false}, Case{1, 3, 78, 78, 4, false, false}}) {
    Data d = make_data(c, 7);
    const int64_t G = c.K / c.gs;
    std::vector<float> out(size_t(c.N * (c.K + 3)), -1.f);
    dequantize_rows(d.p, out.data(), c.K + 3, 1, c.N);
    for (int64_t n = 1; n < c.N; ++n)
      for (int64_t k = 0; k < c.K; ++k) {
        const uint8_t* row = d.p.qweight + n * c.K * c.bits / 8;
        const int q = c.bits == 8 ? row[k] : (k & 1 ? row[k / 2] >> 4 : row[k / 2] & 0xf);
        const int z = c.asym ? d.zeros[size_t(n * G + k / c.gs)] : 1 << (c.bits - 1);
        REQUIRE(out[size_t((n - 1) * (c.K + 3) + k)] == float(q - z) * d.scales[size_t(n * G + k / c.gs)]);
      }
  }
}
