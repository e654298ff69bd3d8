// Portable fallback for qgemm_compute: plain C++ over the F32 layout.
#include "qgemm_impl.h"
#include "qgemm_layout.h"

namespace quantcore::kernels::impl {

void qgemm_rows_f32_scalar(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                          int64_t n_begin, int64_t n_end) {
  const int64_t G = layout::groups(p), gs = p.group_size, rb = layout::row_bytes(p);
  const int mid = 1 << (p.bits - 1);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = p.qweight + n * rb;
    for (int64_t m = 0; m < p.M; ++m) {
      const float* xs = layout::f32_x(ws, p, m);
      const float* xsum = layout::f32_xsum(ws, p, m);
      float acc = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        float dot = 0.f;
        if (p.bits == 4) {
          const uint8_t* qb = row + g * gs / 2;
          const float* xe = xs + g * gs;
          const float* xo = xe + gs / 2;
          for (int64_t j = 0; j < gs / 2; ++j)
            dot += float(qb[j] & 0xf) * xe[j] + float(qb[j] >> 4) * xo[j];
        } else {
          const uint8_t* qb = row + g * gs;
          const float* xg = xs + g * gs;
          for (int64_t j = 0; j < gs; ++j) dot += float(qb[j]) * xg[j];
        }
        const float s = p.scales[n * G + g];
        const float z = float(p.zeros ? p.zeros[n * G + g] : mid);
        acc += s * (dot - z * xsum[g]);
      }
      if (p.bias) acc += p.bias[n];
      layout::store_y(y, y_type, m * p.N + n, acc);
    }
  }
}

}  // namespace quantcore::kernels::impl
