// CPU weight-only quantized matmul: y = x @ dequant(W)^T + bias.
//
// W is N x K, stored as unsigned `bits`-bit codes packed along K (pack_rows
// layout, one row per output feature), with one fp32 scale and one integer zero
// point per group of `group_size` consecutive inputs:  W[n,k] = (q - z) * s.
// Dequantization is fused into the dot products; the float weight is never
// materialised. The work is split in two phases so the caller can run each
// phase on its own thread pool:
//   1. qgemm_prepare: converts activations into the layout the ISA's kernel
//      reads (a workspace of qgemm_workspace_bytes), parallel over rows of x;
//   2. qgemm_compute: computes output columns [n_begin, n_end), parallel over N.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu_features.h"

namespace quantcore::kernels {

enum class DType { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct QGemmProblem {
  int64_t M = 0, N = 0, K = 0;
  int bits = 4;                       // 4 or 8
  int64_t group_size = 128;           // divides K; even when bits == 4
  const uint8_t* qweight = nullptr;   // N rows of K * bits / 8 bytes
  const float* scales = nullptr;      // N x (K / group_size)
  const uint8_t* zeros = nullptr;     // N x (K / group_size), or null: 2^(bits-1)
  const float* bias = nullptr;        // N, or null
};

// How a problem is computed:
//  * rows: one weight row at a time (a few at once), codes decoded in registers
//    and reused across at most 4 activation rows: the GEMV path, best for small M;
//  * tiles: weights of 64 rows decoded once per K block into an L1/L2-resident
//    bf16 panel that every activation row then reuses (bf16 activations, larger M).
// rows_f32 multiplies in fp32 (FMA); the bf16 paths use AVX512_BF16 dot products
// with exact products. (An fp32 tiles variant measured slower than rows_f32,
// which already runs near the FMA peak once 4 activation rows share a decode.)
enum class QGemmPath { kRowsF32 = 0, kRowsBf16 = 1, kTilesBf16 = 2 };

const char* qgemm_path_name(QGemmPath path);

// Throws KernelError when the problem is malformed.
void qgemm_validate(const QGemmProblem& p);

// Whether `path` can run this problem at this ISA level with this activation type.
bool qgemm_path_supported(const QGemmProblem& p, Isa isa, QGemmPath path, DType x_type);

// The path the dispatcher picks: the forced one when set and supported, else
// the fastest supported one for this M.
QGemmPath qgemm_choose_path(const QGemmProblem& p, Isa isa, DType x_type);

// Forces a path for tests and benchmarks ("" or "auto" restores the default).
void qgemm_force_path(const std::string& name);

size_t qgemm_workspace_bytes(const QGemmProblem& p, QGemmPath path);

void qgemm_prepare(const QGemmProblem& p, QGemmPath path, const void* x, DType x_type,
                   void* workspace, int64_t m_begin, int64_t m_end);

// Output columns are computed in blocks of qgemm_column_block(path) rows of W;
// callers splitting N across threads should split at multiples of it.
int64_t qgemm_column_block(QGemmPath path);

void qgemm_compute(const QGemmProblem& p, Isa isa, QGemmPath path, const void* workspace, void* y,
                   DType y_type, int64_t n_begin, int64_t n_end);

// Whole problem on the calling thread (tests, small problems).
void qgemm(const QGemmProblem& p, Isa isa, QGemmPath path, const void* x, DType x_type, void* y,
           DType y_type);

// Plain reference: dequantizes each weight and accumulates in double.
void qgemm_reference(const QGemmProblem& p, const float* x, float* y);

}  // namespace quantcore::kernels
