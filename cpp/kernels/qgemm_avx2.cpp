// AVX2 + FMA kernels over the F32 layout: codes are widened to int32, converted
// to fp32 and accumulated with FMAs; zero points are applied once per group
// through the precomputed group sums of x.
#include <immintrin.h>

#include "qgemm_driver.h"
#include "qgemm_impl.h"

namespace quantcore::kernels::impl {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i load8_u8_as_i32(const uint8_t* src) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
}

// Rows kernel for 4- or 8-bit codes: per group, 16 bytes at a time feed two
// accumulator sets (4-bit: low / high nibbles against the even / odd x values;
// 8-bit: two 8-byte halves); a ragged group end is finished in scalar code.
template <int Bits>
struct RowsF32 {
  template <int R, int MT>
  struct Kernel {
    static_assert(R == 1, "the AVX2 kernels decode one weight row at a time");
    static void run(const QGemmProblem& p, const void* ws, int64_t n, int64_t m0, float* out) {
      const int64_t G = layout::groups(p), gs = p.group_size;
      const int64_t group_bytes = gs * Bits / 8, half = Bits == 4 ? gs / 2 : 8;
      const uint8_t* row = p.qweight + n * layout::row_bytes(p);
      const int mid = 1 << (Bits - 1);
      const __m256i low4 = _mm256_set1_epi32(0xf);
      __m256 tot[MT];
      float corr[MT];
      const float* xs[MT];
      const float* xsum[MT];
      for (int i = 0; i < MT; ++i) {
        tot[i] = _mm256_setzero_ps();
        corr[i] = 0.f;
        xs[i] = layout::f32_x(ws, p, m0 + i);
        xsum[i] = layout::f32_xsum(ws, p, m0 + i);
      }
      for (int64_t g = 0; g < G; ++g) {
        const uint8_t* qb = row + g * group_bytes;
        __m256 acc_a[MT], acc_b[MT];
        float tail[MT];
        for (int i = 0; i < MT; ++i) {
          acc_a[i] = acc_b[i] = _mm256_setzero_ps();
          tail[i] = 0.f;
        }
        const int64_t step = Bits == 4 ? 8 : 16;
        int64_t j = 0;
        for (; j + step <= group_bytes; j += step) {
          __m256 wa, wb;
          if (Bits == 4) {
            const __m256i b = load8_u8_as_i32(qb + j);
            wa = _mm256_cvtepi32_ps(_mm256_and_si256(b, low4));
            wb = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
          } else {
            wa = _mm256_cvtepi32_ps(load8_u8_as_i32(qb + j));
            wb = _mm256_cvtepi32_ps(load8_u8_as_i32(qb + j + 8));
          }
          for (int i = 0; i < MT; ++i) {
            const float* xa = xs[i] + g * gs + j;
            acc_a[i] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xa), acc_a[i]);
            acc_b[i] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xa + half), acc_b[i]);
          }
        }
        for (; j < group_bytes; ++j) {
          for (int i = 0; i < MT; ++i) {
            const float* xa = xs[i] + g * gs + j;
            tail[i] += Bits == 4 ? float(qb[j] & 0xf) * xa[0] + float(qb[j] >> 4) * xa[half]
                                 : float(qb[j]) * xa[0];
          }
        }
        const float s = p.scales[n * G + g];
        const float z = float(p.zeros ? p.zeros[n * G + g] : mid);
        const __m256 sv = _mm256_set1_ps(s);
        for (int i = 0; i < MT; ++i) {
          tot[i] = _mm256_fmadd_ps(_mm256_add_ps(acc_a[i], acc_b[i]), sv, tot[i]);
          corr[i] += s * (z * xsum[i][g] - tail[i]);
        }
      }
      for (int i = 0; i < MT; ++i) out[i] = hsum(tot[i]) - corr[i];
    }
  };
};

template <int R, int MT>
using RowW4 = RowsF32<4>::Kernel<R, MT>;
template <int R, int MT>
using RowW8 = RowsF32<8>::Kernel<R, MT>;

}  // namespace

void qgemm_rows_f32_avx2(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                        int64_t n_begin, int64_t n_end) {
  if (p.bits == 4)
    drive_rows<RowW4, 1, 1, 1, 1>(p, ws, y, y_type, n_begin, n_end);
  else
    drive_rows<RowW8, 1, 1, 1, 1>(p, ws, y, y_type, n_begin, n_end);
}

}  // namespace quantcore::kernels::impl
