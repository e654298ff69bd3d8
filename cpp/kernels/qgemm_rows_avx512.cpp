// AVX-512 "rows" kernels (small M): R weight rows decoded side by side in
// registers and reused across up to 4 activation rows.
//
// * F32 layout (4- and 8-bit): codes widened to int32, converted to fp32 and
//   accumulated with FMAs; zero points applied per group through the group sums
//   of x; ragged group ends use masked loads instead of scalar tails.
// * BF16 layout (4-bit, AVX512_BF16): each 32-byte load of codes is split into
//   low/high nibbles, a 16-entry table (vpermw) maps code q to bf16(q - z), and
//   vdpbf16ps multiplies by x held as 1-3 bf16 planes. Every product is exact in
//   fp32, so results match fp32 arithmetic up to summation order.
#include <type_traits>

#include "qgemm_driver.h"
#include "qgemm_impl.h"
#include "qgemm_simd_avx512.h"

namespace quantcore::kernels::impl {
namespace {

// One step of the fp32 path: 32 weights of each of R rows against MT rows of x,
// into two accumulator sets (4-bit: low / high nibbles; 8-bit: two halves).
// kFull steps use plain loads; the ragged end of a group uses masked ones.
template <int Bits, int R, int MT, bool kFull>
inline void f32_step(const uint8_t* const* rows, const float* const* xs, int64_t g, int64_t gs,
                     int64_t j, int64_t rb, __m512 (*acc_a)[MT], __m512 (*acc_b)[MT]) {
  // The second accumulator set pairs with x at gs/2 (4-bit) or 16 (8-bit) further.
  const int64_t group_bytes = gs * Bits / 8, half = Bits == 4 ? gs / 2 : 16;
  const __mmask16 mk_a = kFull ? __mmask16(0xffff) : tail_mask16(group_bytes - j);
  const __mmask16 mk_b = kFull ? __mmask16(0xffff) : tail_mask16(group_bytes - j - (Bits == 4 ? 0 : 16));
  __m512 wa[R], wb[R];
  for (int r = 0; r < R; ++r) {
    const uint8_t* src = rows[r] + g * group_bytes + j;
    if ((j & 63) == 0) prefetch(src + kPrefetchRows * rb);
    auto load16 = [&](const uint8_t* ptr, __mmask16 mk) {
      return kFull ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(ptr)) : _mm_maskz_loadu_epi8(mk, ptr);
    };
    if (Bits == 4) {
      const __m512i b = _mm512_cvtepu8_epi32(load16(src, mk_a));
      wa[r] = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(0xf)));
      wb[r] = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
    } else {
      wa[r] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(load16(src, mk_a)));
      wb[r] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(load16(src + 16, mk_b)));
    }
  }
  for (int i = 0; i < MT; ++i) {
    // 4-bit: x of the even columns at j, odd at j + gs/2; 8-bit: x at j and j + 16.
    const float* xa = xs[i] + g * gs + j;
    const float* xb = xa + half;
    const __m512 xav = kFull ? _mm512_loadu_ps(xa) : _mm512_maskz_loadu_ps(mk_a, xa);
    const __m512 xbv = kFull ? _mm512_loadu_ps(xb) : _mm512_maskz_loadu_ps(mk_b, xb);
    for (int r = 0; r < R; ++r) {
      acc_a[r][i] = _mm512_fmadd_ps(wa[r], xav, acc_a[r][i]);
      acc_b[r][i] = _mm512_fmadd_ps(wb[r], xbv, acc_b[r][i]);
    }
  }
}

template <int Bits>
struct RowsF32 {
  template <int R, int MT>
  struct Kernel {
    static void run(const QGemmProblem& p, const void* ws, int64_t n, int64_t m0, float* out) {
      const int64_t G = layout::groups(p), gs = p.group_size, rb = layout::row_bytes(p);
      const int64_t group_bytes = gs * Bits / 8, step_bytes = Bits == 4 ? 16 : 32;
      const int mid = 1 << (Bits - 1);
      const uint8_t* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = p.qweight + (n + r) * rb;
      const float* xs[MT];
      const float* xsum[MT];
      for (int i = 0; i < MT; ++i) {
        xs[i] = layout::f32_x(ws, p, m0 + i);
        xsum[i] = layout::f32_xsum(ws, p, m0 + i);
      }
      __m512 tot[R][MT];
      float corr[R][MT];
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < MT; ++i) {
          tot[r][i] = _mm512_setzero_ps();
          corr[r][i] = 0.f;
        }
      for (int64_t g = 0; g < G; ++g) {
        __m512 acc_a[R][MT], acc_b[R][MT];
        for (int r = 0; r < R; ++r)
          for (int i = 0; i < MT; ++i) acc_a[r][i] = acc_b[r][i] = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + step_bytes <= group_bytes; j += step_bytes)
          f32_step<Bits, R, MT, true>(rows, xs, g, gs, j, rb, acc_a, acc_b);
        if (j < group_bytes) f32_step<Bits, R, MT, false>(rows, xs, g, gs, j, rb, acc_a, acc_b);
        // Zero points: sum (q - z) x = sum q x - z sum x, with sum x per group precomputed.
        for (int r = 0; r < R; ++r) {
          const float s = p.scales[(n + r) * G + g];
          const float z = float(p.zeros ? p.zeros[(n + r) * G + g] : mid);
          const __m512 sv = _mm512_set1_ps(s);
          for (int i = 0; i < MT; ++i) {
            tot[r][i] = _mm512_fmadd_ps(_mm512_add_ps(acc_a[r][i], acc_b[r][i]), sv, tot[r][i]);
            corr[r][i] += s * z * xsum[i][g];
          }
        }
      }
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < MT; ++i) out[r * MT + i] = _mm512_reduce_add_ps(tot[r][i]) - corr[r][i];
    }
  };
};

template <int R, int MT>
using RowsW4F32 = RowsF32<4>::Kernel<R, MT>;
template <int R, int MT>
using RowsW8F32 = RowsF32<8>::Kernel<R, MT>;

template <int R, int MT, int P>
struct RowsW4Bf16 {
  static void run(const QGemmProblem& p, const void* ws, int64_t n, int64_t m0, float* out) {
    const int64_t G = layout::groups(p), gs = p.group_size, half = gs / 2, rb = layout::row_bytes(p);
    const ZeroTables& tables = zero_tables();
    const __m512i low4 = _mm512_set1_epi16(0xf);
    const uint8_t* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = p.qweight + (n + r) * rb;
    const uint16_t* xp[MT][P];
    for (int i = 0; i < MT; ++i)
      for (int pl = 0; pl < P; ++pl) xp[i][pl] = layout::bf16_plane(ws, p, m0 + i, pl);
    __m512 tot[R][MT];
    __m512i table[R];
    for (int r = 0; r < R; ++r) {
      table[r] = _mm512_load_si512(tables.t[8]);
      for (int i = 0; i < MT; ++i) tot[r][i] = _mm512_setzero_ps();
    }
    for (int64_t g = 0; g < G; ++g) {
      if (p.zeros)
        for (int r = 0; r < R; ++r) table[r] = _mm512_load_si512(tables.t[p.zeros[(n + r) * G + g] & 0xf]);
      __m512 acc_lo[R][MT], acc_hi[R][MT];
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < MT; ++i) acc_lo[r][i] = acc_hi[r][i] = _mm512_setzero_ps();
      // Full 32-byte steps use plain loads; only a ragged group end needs masks.
      auto step = [&](int64_t j, auto full) {
        constexpr bool kFull = decltype(full)::value;
        const __mmask32 mk = kFull ? __mmask32(0xffffffffu) : tail_mask32(half - j);
        __m512i wlo[R], whi[R];
        for (int r = 0; r < R; ++r) {
          const uint8_t* src = rows[r] + g * half + j;
          if ((j & 63) == 0) prefetch(src + kPrefetchRows * rb);
          const __m256i raw = kFull ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))
                                    : _mm256_maskz_loadu_epi8(mk, src);
          const __m512i b = _mm512_cvtepu8_epi16(raw);
          wlo[r] = _mm512_permutexvar_epi16(_mm512_and_si512(b, low4), table[r]);
          whi[r] = _mm512_permutexvar_epi16(_mm512_srli_epi16(b, 4), table[r]);
        }
        for (int i = 0; i < MT; ++i) {
          for (int pl = 0; pl < P; ++pl) {
            const uint16_t* xe = xp[i][pl] + g * gs + j;
            const __m512i xev = kFull ? _mm512_loadu_si512(xe) : _mm512_maskz_loadu_epi16(mk, xe);
            const __m512i xov = kFull ? _mm512_loadu_si512(xe + half) : _mm512_maskz_loadu_epi16(mk, xe + half);
            for (int r = 0; r < R; ++r) {
              acc_lo[r][i] = dot_bf16(acc_lo[r][i], wlo[r], xev);
              acc_hi[r][i] = dot_bf16(acc_hi[r][i], whi[r], xov);
            }
          }
        }
      };
      int64_t j = 0;
      for (; j + 32 <= half; j += 32) step(j, std::true_type{});
      if (j < half) step(j, std::false_type{});
      for (int r = 0; r < R; ++r) {
        const __m512 sv = _mm512_set1_ps(p.scales[(n + r) * G + g]);
        for (int i = 0; i < MT; ++i)
          tot[r][i] = _mm512_fmadd_ps(_mm512_add_ps(acc_lo[r][i], acc_hi[r][i]), sv, tot[r][i]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < MT; ++i) out[r * MT + i] = _mm512_reduce_add_ps(tot[r][i]);
  }
};

template <int R, int MT>
using RowsW4Bf16P1 = RowsW4Bf16<R, MT, 1>;
template <int R, int MT>
using RowsW4Bf16P2 = RowsW4Bf16<R, MT, 2>;
template <int R, int MT>
using RowsW4Bf16P3 = RowsW4Bf16<R, MT, 3>;

}  // namespace

void qgemm_rows_f32_avx512(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                           int64_t n_begin, int64_t n_end) {
  if (p.bits == 4)
    drive_rows<RowsW4F32, 4, 2, 1, 1>(p, ws, y, y_type, n_begin, n_end);
  else
    drive_rows<RowsW8F32, 4, 2, 1, 1>(p, ws, y, y_type, n_begin, n_end);
}

void qgemm_rows_bf16_avx512(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                            int64_t n_begin, int64_t n_end) {
  switch (layout::bf16_plane_count(ws)) {
    case 1: drive_rows<RowsW4Bf16P1, 4, 2, 1, 1, true>(p, ws, y, y_type, n_begin, n_end); break;
    case 2: drive_rows<RowsW4Bf16P2, 4, 2, 1, 1>(p, ws, y, y_type, n_begin, n_end); break;
    default: drive_rows<RowsW4Bf16P3, 4, 2, 1, 1>(p, ws, y, y_type, n_begin, n_end); break;
  }
}

}  // namespace quantcore::kernels::impl
