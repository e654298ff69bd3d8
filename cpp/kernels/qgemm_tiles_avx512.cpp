// AVX-512 "tiles" kernel (larger M; activations as 1-3 exact bf16 planes).
//
// The weights of 32 output rows are decoded once per K block into a panel of
// exact bf16 integers q - z, laid out for vdpbf16ps: entry [p][n] is the dword
// holding row n's values at prepared columns 2p and 2p+1. The micro-kernel
// then keeps 4 activation rows x 32 output columns of fp32 sums in registers;
// each step loads two panel vectors, broadcasts one bf16 pair of x per row and
// issues 8 dot products: no horizontal sums, weights decoded once for all M.
// Group scales are applied per group in fp32 (tot += s[n] * acc), so every
// product stays exact. Panels use the activations' prepared column order
// (qgemm_layout.h).
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "qgemm_impl.h"
#include "qgemm_layout.h"
#include "qgemm_simd_avx512.h"
#include "status.h"

namespace quantcore::kernels::impl {
namespace {

constexpr int64_t kPanelRows = 32;  // output rows per panel: two 16-lane vectors
constexpr int64_t kBlockK = 512;    // target panel depth in weights
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

// ------------------------------------------------------------------- decode

// Row-major bf16(q - z) of 32 rows for the block's prepared columns, rows past
// the end and columns past the block zero-filled up to a multiple of 32.
void decode_rows_bf16(const QGemmProblem& p, int64_t n0, int64_t rows, const KBlock& b, int64_t ld,
                      uint16_t* out) {
  const int64_t G = layout::groups(p), rb = layout::row_bytes(p);
  const int mid = 1 << (p.bits - 1);
  const ZeroTables& tables = zero_tables();
  for (int64_t r = 0; r < kPanelRows; ++r) {
    uint16_t* dst = out + r * ld;
    std::memset(dst, 0, sizeof(uint16_t) * size_t(ld));
    if (r >= rows) continue;
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

// 16 x 16 transpose of 32-bit elements: in[r] holds row r; out[c] column c.
inline void transpose16x16(__m512i v[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Now within each 128-bit lane the 4x4 blocks are transposed; shuffle lanes.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(v[i], v[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(v[i], v[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(v[i + 8], v[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(v[i + 8], v[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    v[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    v[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    v[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// rows [32][ld] (bf16, pairs as dwords) -> panel [pairs][32] dwords.
void transpose_to_panel(const uint16_t* rows, int64_t ld, int64_t pairs, uint32_t* panel) {
  const uint32_t* src = reinterpret_cast<const uint32_t*>(rows);
  const int64_t ld32 = ld / 2;
  for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
    for (int half = 0; half < 2; ++half) {
      __m512i v[16];
      for (int r = 0; r < 16; ++r) v[r] = _mm512_loadu_si512(src + (half * 16 + r) * ld32 + p0);
      transpose16x16(v);
      for (int c = 0; c < 16; ++c) _mm512_storeu_si512(panel + (p0 + c) * kPanelRows + half * 16, v[c]);
    }
  }
}

// ------------------------------------------------------------------- micro

// C[m][0..32) += sum over the block's groups of s[g][n] * (x[m] . panel[:, n]).
// x[m][pl] are the P bf16 planes of activation row m (their sum is x exactly).
template <int MR, int P>
void micro(const QGemmProblem& p, const uint16_t* const (*x)[3], const uint32_t* panel, const float* scales,
           const KBlock& b, float* c) {
  const int64_t gs = p.group_size;
  __m512 tot[MR][2];
  for (int m = 0; m < MR; ++m) tot[m][0] = tot[m][1] = _mm512_setzero_ps();
  int gi = 0;
  for (int64_t t0 = 0; t0 < b.len; ++gi) {
    const int64_t g = (b.k0 + t0) / gs;
    const int64_t t1 = std::min(b.len, (g + 1) * gs - b.k0);
    __m512 acc[MR][2];
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t pr = t0 / 2; pr < t1 / 2; ++pr) {
      const __m512i w0 = _mm512_load_si512(panel + pr * kPanelRows);
      const __m512i w1 = _mm512_load_si512(panel + pr * kPanelRows + 16);
      for (int m = 0; m < MR; ++m) {
        for (int pl = 0; pl < P; ++pl) {
          int32_t pair;
          std::memcpy(&pair, x[m][pl] + 2 * pr, sizeof(pair));
          const __m512i xv = _mm512_set1_epi32(pair);
          acc[m][0] = dot_bf16(acc[m][0], w0, xv);
          acc[m][1] = dot_bf16(acc[m][1], w1, xv);
        }
      }
    }
    const __m512 s0 = _mm512_load_ps(scales + gi * kPanelRows);
    const __m512 s1 = _mm512_load_ps(scales + gi * kPanelRows + 16);
    for (int m = 0; m < MR; ++m) {
      tot[m][0] = _mm512_fmadd_ps(acc[m][0], s0, tot[m][0]);
      tot[m][1] = _mm512_fmadd_ps(acc[m][1], s1, tot[m][1]);
    }
    t0 = t1;
  }
  for (int m = 0; m < MR; ++m) {
    float* cm = c + m * kPanelRows;
    _mm512_storeu_ps(cm, _mm512_add_ps(_mm512_loadu_ps(cm), tot[m][0]));
    _mm512_storeu_ps(cm + 16, _mm512_add_ps(_mm512_loadu_ps(cm + 16), tot[m][1]));
  }
}

// ------------------------------------------------------------------- driver

template <int P>
void run_tiles(const QGemmProblem& p, const void* ws, void* y, DType y_type, int64_t n_begin, int64_t n_end) {
  const int64_t G = layout::groups(p), gs = p.group_size;
  const int64_t ld = kBlockK + 32;  // staging row length, a multiple of 32 values
  const int64_t max_groups = gs <= kBlockK ? kBlockK / gs : 1;
  Scratch stage_mem(sizeof(uint16_t) * kPanelRows * ld);
  Scratch panel_mem(sizeof(uint32_t) * (ld / 2) * kPanelRows);
  Scratch scale_mem(sizeof(float) * max_groups * kPanelRows);
  Scratch c_mem(sizeof(float) * size_t(p.M) * kPanelRows);
  uint16_t* stage = static_cast<uint16_t*>(stage_mem.ptr);
  uint32_t* panel = static_cast<uint32_t*>(panel_mem.ptr);
  float* scales = static_cast<float*>(scale_mem.ptr);
  float* c = static_cast<float*>(c_mem.ptr);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, n_end - n0);
    std::memset(c, 0, sizeof(float) * size_t(p.M) * kPanelRows);
    for_each_block(p, [&](const KBlock& b) {
      decode_rows_bf16(p, n0, rows, b, ld, stage);
      transpose_to_panel(stage, ld, (b.len / 2 + 15) / 16 * 16, panel);
      const int64_t g_first = b.k0 / gs, g_count = (b.k0 + b.len - 1) / gs - g_first + 1;
      for (int64_t gi = 0; gi < g_count; ++gi)
        for (int64_t r = 0; r < kPanelRows; ++r)
          scales[gi * kPanelRows + r] = r < rows ? p.scales[(n0 + r) * G + g_first + gi] : 0.f;
      for (int64_t m0 = 0; m0 < p.M; m0 += kMr) {
        const int mr = int(std::min<int64_t>(kMr, p.M - m0));
        const uint16_t* x[kMr][3];
        for (int i = 0; i < kMr; ++i)
          for (int pl = 0; pl < P; ++pl)
            x[i][pl] = layout::bf16_plane(ws, p, m0 + std::min(i, mr - 1), pl) + b.k0;
        float* cc = c + m0 * kPanelRows;
        switch (mr) {
          case 4: micro<4, P>(p, x, panel, scales, b, cc); break;
          case 3: micro<3, P>(p, x, panel, scales, b, cc); break;
          case 2: micro<2, P>(p, x, panel, scales, b, cc); break;
          default: micro<1, P>(p, x, panel, scales, b, cc); break;
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
  switch (layout::bf16_plane_count(ws)) {
    case 1: run_tiles<1>(p, ws, y, y_type, n_begin, n_end); break;
    case 2: run_tiles<2>(p, ws, y, y_type, n_begin, n_end); break;
    default: run_tiles<3>(p, ws, y, y_type, n_begin, n_end); break;
  }
}

}  // namespace quantcore::kernels::impl
