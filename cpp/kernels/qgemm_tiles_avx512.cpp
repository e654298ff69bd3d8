// AVX-512 "tiles" kernel (bf16 activations, larger M): the weights of 64 output
// rows are decoded once per K block into a bf16 panel of exact integers q - z
// that stays in L1/L2; every group of 4 activation rows then runs a 4 x 2
// micro-kernel of vdpbf16ps over it, applying each group's scale in fp32.
// Decoding is thus paid once per weight for all M rows instead of once per 4.
// Panels and prepared activations share one column order (qgemm_layout.h), so
// the micro-kernel is a plain dot product over a contiguous range.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "qgemm_impl.h"
#include "qgemm_layout.h"
#include "qgemm_simd_avx512.h"
#include "status.h"

namespace quantcore::kernels::impl {
namespace {

constexpr int64_t kPanelRows = 64;  // output rows decoded together (one column block)
constexpr int64_t kBlockK = 512;    // target panel width in weights
constexpr int kMr = 4;              // activation rows per micro-kernel

// Scratch memory without std containers (this file is compiled for AVX-512).
struct Scratch {
  void* ptr;
  explicit Scratch(size_t bytes) : ptr(std::aligned_alloc(64, (bytes + 63) / 64 * 64)) {
    QC_REQUIRE(ptr != nullptr, "qgemm: out of memory for a weight panel");
  }
  ~Scratch() { std::free(ptr); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// A K block: prepared columns [k0, k0 + len), whole groups or a slice of one group.
struct KBlock {
  int64_t k0, len;
};

template <class F>
void for_each_block(const QGemmProblem& p, F&& f) {
  const int64_t gs = p.group_size;
  if (gs <= kBlockK) {
    const int64_t span = (kBlockK / gs) * gs;
    for (int64_t k0 = 0; k0 < p.K; k0 += span) f(KBlock{k0, std::min(span, p.K - k0)});
  } else {
    for (int64_t g0 = 0; g0 < p.K; g0 += gs)
      for (int64_t a = 0; a < gs; a += kBlockK) f(KBlock{g0 + a, std::min(kBlockK, gs - a)});
  }
}

// Calls f(dst_offset, byte_ptr, count, high_nibble, group) for the runs of
// prepared columns [k0, k0+len) of one weight row that share a group (and, for
// 4-bit codes, a nibble half).
template <class F>
void for_each_run(const QGemmProblem& p, const uint8_t* row, const KBlock& b, F&& f) {
  const int64_t gs = p.group_size;
  int64_t t = b.k0;
  const int64_t end = b.k0 + b.len;
  while (t < end) {
    const int64_t g = t / gs, u = t - g * gs;
    if (p.bits == 4) {
      const int64_t half = gs / 2;
      const bool high = u >= half;
      const int64_t j = high ? u - half : u;
      const int64_t cnt = std::min(end, g * gs + (high ? gs : half)) - t;
      f(t - b.k0, row + g * half + j, cnt, high, g);
      t += cnt;
    } else {
      const int64_t cnt = std::min(end, (g + 1) * gs) - t;
      f(t - b.k0, row + t, cnt, false, g);
      t += cnt;
    }
  }
}

// ----------------------------------------------------------------- tiles_bf16

void decode_panel_bf16(const QGemmProblem& p, int64_t n0, int64_t rows, const KBlock& b, uint16_t* panel) {
  const int64_t G = layout::groups(p), rb = layout::row_bytes(p);
  const int mid = 1 << (p.bits - 1);
  const ZeroTables& tables = zero_tables();
  for (int64_t r = 0; r < kPanelRows; ++r) {
    uint16_t* dst = panel + r * kBlockK;
    if (r >= rows) {
      std::memset(dst, 0, sizeof(uint16_t) * size_t(b.len));
      continue;
    }
    const int64_t n = n0 + r;
    for_each_run(p, p.qweight + n * rb, b, [&](int64_t off, const uint8_t* src, int64_t cnt, bool high, int64_t g) {
      const int z = p.zeros ? p.zeros[n * G + g] : mid;
      if (p.bits == 4) {
        const __m512i table = _mm512_load_si512(tables.t[z & 0xf]);
        for (int64_t i = 0; i < cnt; i += 32) {
          const __mmask32 mk = tail_mask32(cnt - i);
          __m512i q = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mk, src + i));
          q = high ? _mm512_srli_epi16(q, 4) : _mm512_and_si512(q, _mm512_set1_epi16(0xf));
          _mm512_mask_storeu_epi16(dst + off + i, mk, _mm512_permutexvar_epi16(q, table));
        }
      } else {
        const __m512i zv = _mm512_set1_epi32(z);
        for (int64_t i = 0; i < cnt; i += 16) {
          const __mmask16 mk = tail_mask16(cnt - i);
          const __m512i q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, src + i)), zv);
          const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_cvtepi32_ps(q));  // exact: |q - z| <= 255
          _mm256_mask_storeu_epi16(dst + off + i, mk, h);
        }
      }
    });
  }
}

// Per group inside the block: acc = x . (q - z); tot += s * acc. C += sum(tot).
template <int MR>
void micro_bf16(const QGemmProblem& p, const uint16_t* const* x, const uint16_t* panel, const KBlock& b,
                int64_t n, float* c, int64_t ldc) {
  constexpr int NR = 2;
  const int64_t G = layout::groups(p), gs = p.group_size;
  __m512 tot[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) tot[m][r] = _mm512_setzero_ps();
  for (int64_t t0 = 0; t0 < b.len;) {
    const int64_t g = (b.k0 + t0) / gs;
    const int64_t t1 = std::min(b.len, (g + 1) * gs - b.k0);
    __m512 acc[MR][NR];
    for (int m = 0; m < MR; ++m)
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
    for (int64_t k = t0; k < t1; k += 32) {
      const __mmask32 mk = tail_mask32(t1 - k);
      __m512i w[NR];
      for (int r = 0; r < NR; ++r) w[r] = _mm512_maskz_loadu_epi16(mk, panel + r * kBlockK + k);
      for (int m = 0; m < MR; ++m) {
        const __m512i xv = _mm512_maskz_loadu_epi16(mk, x[m] + k);
        for (int r = 0; r < NR; ++r) acc[m][r] = dot_bf16(acc[m][r], w[r], xv);
      }
    }
    for (int r = 0; r < NR; ++r) {
      const __m512 sv = _mm512_set1_ps(n + r < p.N ? p.scales[(n + r) * G + g] : 0.f);
      for (int m = 0; m < MR; ++m) tot[m][r] = _mm512_fmadd_ps(acc[m][r], sv, tot[m][r]);
    }
    t0 = t1;
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) c[m * ldc + r] += _mm512_reduce_add_ps(tot[m][r]);
}

// ------------------------------------------------------------------- driver

void run_tiles(const QGemmProblem& p, const void* ws, void* y, DType y_type, int64_t n_begin, int64_t n_end) {
  using Elem = uint16_t;
  constexpr int kNr = 2;
  Scratch panel_mem(sizeof(Elem) * kPanelRows * kBlockK);
  Scratch c_mem(sizeof(float) * size_t(p.M) * kPanelRows);
  Elem* panel = static_cast<Elem*>(panel_mem.ptr);
  float* c = static_cast<float*>(c_mem.ptr);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, n_end - n0);
    std::memset(c, 0, sizeof(float) * size_t(p.M) * kPanelRows);
    for_each_block(p, [&](const KBlock& b) {
      decode_panel_bf16(p, n0, rows, b, panel);
      for (int64_t m0 = 0; m0 < p.M; m0 += kMr) {
        const int mr = int(std::min<int64_t>(kMr, p.M - m0));
        const Elem* x[kMr];
        for (int i = 0; i < kMr; ++i) {
          x[i] = layout::bf16_plane(ws, p, m0 + std::min(i, mr - 1), 0) + b.k0;
        }
        for (int64_t r0 = 0; r0 < rows; r0 += kNr) {
          float* cc = c + m0 * kPanelRows + r0;
          const Elem* pr = panel + r0 * kBlockK;
          switch (mr) {
            case 4: micro_bf16<4>(p, x, pr, b, n0 + r0, cc, kPanelRows); break;
            case 3: micro_bf16<3>(p, x, pr, b, n0 + r0, cc, kPanelRows); break;
            case 2: micro_bf16<2>(p, x, pr, b, n0 + r0, cc, kPanelRows); break;
            default: micro_bf16<1>(p, x, pr, b, n0 + r0, cc, kPanelRows); break;
          }
        }
      }
    });
    for (int64_t m = 0; m < p.M; ++m)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r;
        layout::store_y(y, y_type, m * p.N + n, c[m * kPanelRows + r] + (p.bias ? p.bias[n] : 0.f));
      }
  }
}

}  // namespace

void qgemm_tiles_bf16_avx512(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                             int64_t n_begin, int64_t n_end) {
  run_tiles(p, ws, y, y_type, n_begin, n_end);
}

}  // namespace quantcore::kernels::impl
