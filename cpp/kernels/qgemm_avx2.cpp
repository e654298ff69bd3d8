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

template <int R, int MT>
struct RowW4 {
  static_assert(R == 1, "the AVX2 kernels decode one weight row at a time");
  static void run(const QGemmProblem& p, const void* ws, int64_t n, int64_t m0, float* out) {
    const int64_t G = layout::groups(p), gs = p.group_size, half = gs / 2;
    const uint8_t* row = p.qweight + n * layout::row_bytes(p);
    const int mid = 1 << (p.bits - 1);
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
      const uint8_t* qb = row + g * half;
      __m256 acc_lo[MT], acc_hi[MT];
      float tail[MT];
      for (int i = 0; i < MT; ++i) {
        acc_lo[i] = _mm256_setzero_ps();
        acc_hi[i] = _mm256_setzero_ps();
        tail[i] = 0.f;
      }
      int64_t j = 0;
      for (; j + 8 <= half; j += 8) {
        const __m256i b = load8_u8_as_i32(qb + j);
        const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, low4));
        const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
        for (int i = 0; i < MT; ++i) {
          const float* xe = xs[i] + g * gs + j;
          acc_lo[i] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xe), acc_lo[i]);
          acc_hi[i] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xe + half), acc_hi[i]);
        }
      }
      for (; j < half; ++j) {
        const float lo = float(qb[j] & 0xf), hi = float(qb[j] >> 4);
        for (int i = 0; i < MT; ++i) {
          const float* xe = xs[i] + g * gs + j;
          tail[i] += lo * xe[0] + hi * xe[half];
        }
      }
      const float s = p.scales[n * G + g];
      const float z = float(p.zeros ? p.zeros[n * G + g] : mid);
      const __m256 sv = _mm256_set1_ps(s);
      for (int i = 0; i < MT; ++i) {
        tot[i] = _mm256_fmadd_ps(_mm256_add_ps(acc_lo[i], acc_hi[i]), sv, tot[i]);
        corr[i] += s * (z * xsum[i][g] - tail[i]);
      }
    }
    for (int i = 0; i < MT; ++i) out[i] = hsum(tot[i]) - corr[i];
  }
};

template <int R, int MT>
struct RowW8 {
  static_assert(R == 1, "the AVX2 kernels decode one weight row at a time");
  static void run(const QGemmProblem& p, const void* ws, int64_t n, int64_t m0, float* out) {
    const int64_t G = layout::groups(p), gs = p.group_size;
    const uint8_t* row = p.qweight + n * layout::row_bytes(p);
    const int mid = 1 << (p.bits - 1);
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
      const uint8_t* qb = row + g * gs;
      __m256 acc0[MT], acc1[MT];
      float tail[MT];
      for (int i = 0; i < MT; ++i) {
        acc0[i] = _mm256_setzero_ps();
        acc1[i] = _mm256_setzero_ps();
        tail[i] = 0.f;
      }
      int64_t k = 0;
      for (; k + 16 <= gs; k += 16) {
        const __m256 q0 = _mm256_cvtepi32_ps(load8_u8_as_i32(qb + k));
        const __m256 q1 = _mm256_cvtepi32_ps(load8_u8_as_i32(qb + k + 8));
        for (int i = 0; i < MT; ++i) {
          const float* xg = xs[i] + g * gs + k;
          acc0[i] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(xg), acc0[i]);
          acc1[i] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xg + 8), acc1[i]);
        }
      }
      for (; k < gs; ++k)
        for (int i = 0; i < MT; ++i) tail[i] += float(qb[k]) * xs[i][g * gs + k];
      const float s = p.scales[n * G + g];
      const float z = float(p.zeros ? p.zeros[n * G + g] : mid);
      const __m256 sv = _mm256_set1_ps(s);
      for (int i = 0; i < MT; ++i) {
        tot[i] = _mm256_fmadd_ps(_mm256_add_ps(acc0[i], acc1[i]), sv, tot[i]);
        corr[i] += s * (z * xsum[i][g] - tail[i]);
      }
    }
    for (int i = 0; i < MT; ++i) out[i] = hsum(tot[i]) - corr[i];
  }
};

}  // namespace

void qgemm_rows_f32_avx2(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                        int64_t n_begin, int64_t n_end) {
  if (p.bits == 4)
    drive_rows<RowW4, 1, 1, 1, 1>(p, ws, y, y_type, n_begin, n_end);
  else
    drive_rows<RowW8, 1, 1, 1, 1>(p, ws, y, y_type, n_begin, n_end);
}

}  // namespace quantcore::kernels::impl
