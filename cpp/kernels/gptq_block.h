// The inner loop of GPTQ (Frantar et al. 2022, Algorithm 1): quantize the
// columns of one lazy block in order, each column's rounding error, scaled by
// the inverse Hessian factor, pushed onto the block's later columns.
//
// Once the block's grids are fixed every weight row is independent, so the
// caller splits rows across threads. The trailing update of the columns after
// the block (a GEMM) and the Cholesky factorization stay with the caller.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

struct GptqBlock {
  float* w = nullptr;  // w[r * ld_w + i]: block column i of row r, updated in place
  int64_t ld_w = 0;
  int64_t count = 0;  // block width
  // hinv[i * ld_h + j], j >= i: the block's part of U, the upper Cholesky factor of H^-1.
  const float* hinv = nullptr;
  int64_t ld_h = 0;
  // Grid g of row r: scales[r * ld_grid + g], zeros likewise (integral values).
  const float* scales = nullptr;
  const float* zeros = nullptr;
  int64_t ld_grid = 0;
  const int32_t* grid_of = nullptr;  // [count]: the grid block column i uses
  int bits = 4;
  uint8_t* codes = nullptr;  // codes[r * ld_codes + i]
  int64_t ld_codes = 0;
  float* err = nullptr;  // err[r * ld_err + i] = (w - dequant(code)) / U[i][i]
  int64_t ld_err = 0;
};

// Quantizes rows [row_begin, row_end) of the block. Returns the sum of err^2
// over those rows (GPTQ's objective). Arithmetic follows the reference code
// operation for operation (w / s, not w * (1/s); products rounded before the
// subtraction), so codes match it exactly.
double gptq_block_rows(const GptqBlock& b, int64_t row_begin, int64_t row_end);

}  // namespace quantcore::kernels
