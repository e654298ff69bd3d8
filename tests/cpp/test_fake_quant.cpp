#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "fake_quant.h"
#include "rtn.h"

using namespace quantcore::kernels;

namespace {

// Reference: scale and clamp the matrix first, quantize it with RTN, then
// dequantize and divide back, one step at a time.
std::vector<float> reference(const std::vector<float>& w, int64_t rows, int64_t cols, const RtnParams& p,
                             const std::vector<float>& s, const std::vector<float>& clip) {
  const int64_t gs = p.group_size, groups = cols / gs;
  std::vector<float> v(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float x = w[size_t(r * cols + c)] * (s.empty() ? 1.f : s[size_t(c)]);
      if (!clip.empty()) {
        const float m = clip[size_t(r * groups + c / gs)];
        x = std::min(std::max(x, -m), m);
      }
      v[size_t(r * cols + c)] = x;
    }
  std::vector<uint8_t> codes(w.size()), zeros(size_t(rows * groups));
  std::vector<float> scales(size_t(rows * groups));
  rtn_quantize_rows(v.data(), cols, p, codes.data(), scales.data(), zeros.data(), 0, rows);
  std::vector<float> out(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t g = size_t(r * groups + c / gs);
      const float d = (float(codes[size_t(r * cols + c)]) - float(zeros[g])) * scales[g];
      out[size_t(r * cols + c)] = s.empty() ? d : d / s[size_t(c)];
    }
  return out;
}

}  // namespace

TEST_CASE("fake_quantize_rows equals RTN of the scaled, clamped weight", "[fake_quant]") {
  const int64_t rows = 7, cols = 96;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uni(0.2f, 3.f);
  std::vector<float> w(static_cast<size_t>(rows * cols)), s(static_cast<size_t>(cols));
  for (auto& x : w) x = normal(rng);
  for (auto& x : s) x = uni(rng);
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (int64_t gs : {int64_t(32), int64_t(96)}) {
        RtnParams p;
        p.bits = bits;
        p.symmetric = sym;
        p.group_size = gs;
        p.scale_type = ScaleType::kF16;
        std::vector<float> clip(static_cast<size_t>(rows * cols / gs));
        for (auto& m : clip) m = uni(rng);
        for (int variant = 0; variant < 4; ++variant) {
          const std::vector<float> cs = (variant & 1) ? s : std::vector<float>();
          const std::vector<float> cl = (variant & 2) ? clip : std::vector<float>();
          std::vector<float> out(w.size());
          fake_quantize_rows(w.data(), cols, p, cs.empty() ? nullptr : cs.data(), cl.empty() ? nullptr : cl.data(),
                             out.data(), 0, rows);
          REQUIRE(out == reference(w, rows, cols, p, cs, cl));
        }
      }
}
