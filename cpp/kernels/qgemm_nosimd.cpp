// Non-x86 builds: the SIMD entry points exist but are never selected
// (isa_supported() reports only the scalar level), so they reuse the scalar code.
#include "qgemm_impl.h"

namespace quantcore::kernels::impl {

#define QC_FORWARD_TO_SCALAR(name)                                                           \
  void name(const QGemmProblem& p, const void* ws, void* y, DType t, int64_t b, int64_t e) { \
    qgemm_rows_f32_scalar(p, ws, y, t, b, e);                                                \
  }
QC_FORWARD_TO_SCALAR(qgemm_rows_f32_avx2)
QC_FORWARD_TO_SCALAR(qgemm_rows_f32_avx512)
QC_FORWARD_TO_SCALAR(qgemm_rows_bf16_avx512)
QC_FORWARD_TO_SCALAR(qgemm_tiles_bf16_avx512)
#undef QC_FORWARD_TO_SCALAR

}  // namespace quantcore::kernels::impl
