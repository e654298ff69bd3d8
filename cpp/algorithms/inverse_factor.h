// The factor GPTQ needs from a Hessian H: U, the upper Cholesky factor of H^-1
// (H^-1 = U^T U), computed inside the n x n matrix that holds H.
//
// The textbook route (GPTQ's reference: cholesky, cholesky_inverse, cholesky
// upper) needs two n x n matrices beside the Hessian and inverts H explicitly.
// Here the rows and columns are reversed first (G = J H J, J the reversal):
// with G = L L^T, H^-1 = (J X J)^T (J X J) for X = L^-1, and J X J is upper
// triangular with a positive diagonal, so it is U. One Cholesky and one
// triangular inverse, blocked and in place in the lower triangle.
//
// Every step reads and writes the lower triangle and the diagonal only: the
// strict upper triangle still holds G afterwards, so with G's diagonal kept
// aside the caller's Hessian can be restored exactly (gptq_quantize works in
// the caller's own matrix that way and gives it back unchanged). The only
// other memory is panels of n x block. ATen operations only, so the same code
// runs on CPU and CUDA tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace quantcore::algorithms {

// m <- m[order][:, order] for an exactly symmetric square m, in place: rows
// permuted along their cycles, a blocked transpose, rows permuted again.
void permute_symmetric_inplace(at::Tensor& m, const std::vector<int64_t>& order, int64_t block = 256);

// Whether m == m^T exactly (compared block by block, no n x n temporary).
bool exactly_symmetric(const at::Tensor& m, int64_t block = 256);

// Lower Cholesky factor of the symmetric float32 matrix `a` written over its
// lower triangle and diagonal. Returns false when a is not (numerically)
// positive definite; the lower triangle is then partly overwritten.
bool cholesky_lower_inplace(at::Tensor& a, int64_t block = 256);

// X = L^-1 written over the lower triangular L held in the lower triangle and
// diagonal of `l`.
void invert_lower_inplace(at::Tensor& l, int64_t block = 256);

// The symmetric matrix back from its strict upper triangle and `diagonal`.
void restore_lower_from_upper(at::Tensor& m, const at::Tensor& diagonal, int64_t block = 256);

// Rows [r0, r0 + nr) x columns [c0, c0 + nc) of U = J X J, X the lower
// triangle of `x` (what invert_lower_inplace left), as a new contiguous tensor;
// entries below U's diagonal are zero.
at::Tensor upper_factor_block(const at::Tensor& x, int64_t r0, int64_t nr, int64_t c0, int64_t nc);

// Identity in the lower triangle and diagonal (U = I: GPTQ becomes RTN).
void set_lower_identity(at::Tensor& m, int64_t block = 256);

// Whether the lower triangle of m (diagonal included) is finite.
bool lower_finite(const at::Tensor& m, int64_t block = 256);

}  // namespace quantcore::algorithms
