// Dequantization of packed weight rows into fp32: W[n, k] = (q - z) * s.
//
// Used where a dense matmul library beats the fused kernels (large M with fp32
// activations): the caller dequantizes a panel of rows at a time, so the full
// float weight never exists.
#pragma once

#include <cstdint>

#include "qgemm.h"

namespace quantcore::kernels {

// Writes rows [n_begin, n_end) of the problem's weight to out[(n - n_begin) * ld + k]
// in natural column order. Only qweight, scales, zeros, bits, group_size and K are read.
void dequantize_rows(const QGemmProblem& p, float* out, int64_t ld, int64_t n_begin, int64_t n_end);

}  // namespace quantcore::kernels
