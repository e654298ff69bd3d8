#include "dequant.h"

#include "qgemm_layout.h"

namespace quantcore::kernels {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Plain loops the compiler vectorizes; the loader picks the widest clone.
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void dequantize_group(const uint8_t* q, int bits, int64_t count, float zero, float scale, float* out) {
  if (bits == 4) {
    for (int64_t j = 0; j < count / 2; ++j) {
      out[2 * j] = (float(q[j] & 0xf) - zero) * scale;
      out[2 * j + 1] = (float(q[j] >> 4) - zero) * scale;
    }
  } else {
    for (int64_t j = 0; j < count; ++j) out[j] = (float(q[j]) - zero) * scale;
  }
}

}  // namespace

void dequantize_rows(const QGemmProblem& p, float* out, int64_t ld, int64_t n_begin, int64_t n_end) {
  const int64_t G = layout::groups(p), gs = p.group_size, rb = layout::row_bytes(p);
  const int mid = 1 << (p.bits - 1);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = p.qweight + n * rb;
    float* dst = out + (n - n_begin) * ld;
    for (int64_t g = 0; g < G; ++g) {
      const float z = float(p.zeros ? p.zeros[n * G + g] : mid);
      dequantize_group(row + g * gs * p.bits / 8, p.bits, gs, z, p.scales[n * G + g], dst + g * gs);
    }
  }
}

}  // namespace quantcore::kernels
