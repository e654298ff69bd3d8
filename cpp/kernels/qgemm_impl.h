// Per-ISA compute kernels behind qgemm_compute (internal to the kernels library).
#pragma once

#include "qgemm.h"

namespace quantcore::kernels::impl {

// Rows path over the F32 layout, bits 4 and 8.
void qgemm_rows_f32_scalar(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                           int64_t n_begin, int64_t n_end);
void qgemm_rows_f32_avx2(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                         int64_t n_begin, int64_t n_end);
void qgemm_rows_f32_avx512(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                           int64_t n_begin, int64_t n_end);
// Rows path over BF16 planes, 4-bit only (AVX512_BF16).
void qgemm_rows_bf16_avx512(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                            int64_t n_begin, int64_t n_end);
// Tiles path over BF16 planes, bits 4 and 8 (AVX512_BF16).
void qgemm_tiles_bf16_avx512(const QGemmProblem& p, const void* ws, void* y, DType y_type,
                             int64_t n_begin, int64_t n_end);

}  // namespace quantcore::kernels::impl
