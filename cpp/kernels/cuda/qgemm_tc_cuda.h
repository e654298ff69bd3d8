// W4A16 GEMM on tensor cores: y[M, N] = x[M, K] @ dequant(W)^T + bias, for any M,
// reading W in the "tensor-core layout" that QuantLinear builds once from the
// canonical one (python/quantcore/nn/tc_layout.py documents and builds it):
//
//  * codes: int32 [N / 32, 4 K]. Strip s holds output features 32 s .. 32 s + 31;
//    inside it, tile kt (inputs 32 kt .. 32 kt + 31) is 128 words, word 4 l + w
//    belonging to lane l of the warp (g = l / 4, t = l % 4) and w = 2 ks + np.
//    Nibble e * 4 + h * 2 + hk of that word is the code of
//      n = 32 s + 16 np + 8 h + g,   k = 32 kt + 16 ks + 8 hk + 2 t + e,
//    so the pairs (0,4) (1,5) (2,6) (3,7) are exactly the mma.m16n8k16 B
//    fragments (b0, b1 of n8 block 2 np, then of block 2 np + 1).
//  * scales: [K / group, N] in their stored dtype (the canonical [N, K / group]
//    transposed, so a CTA copies a group's row in one piece); zeros (uint8,
//    optional) the same.
//
// Free of CUDA and torch headers.
#pragma once

#include <cstdint>

#include "qgemv_cuda.h"

namespace quantcore::kernels {

struct QGemmTcArgs {
  const void* x = nullptr;            // [M, K] activations (fp16 / bf16), rows contiguous, 16-byte aligned
  const int32_t* codes = nullptr;     // tensor-core layout, above
  const void* scales = nullptr;       // [K / group, N]
  const uint8_t* zeros = nullptr;     // [K / group, N], or null (symmetric: 8)
  const void* bias = nullptr;         // [N], act type, or null
  void* y = nullptr;                  // [M, N], act type
  float* workspace = nullptr;         // split-K partial sums: qgemm_tc_workspace() floats
  int32_t* counters = nullptr;        // split-K arrival counters: qgemm_tc_counters() ints, zero before the
                                      // first launch; every launch leaves them zero, so they can be reused
  int64_t M = 0, N = 0, K = 0;
  int64_t group_size = 128;           // a multiple of 32 dividing K; K means per output channel
  GpuFloat act = GpuFloat::kF16;      // kF16 or kBF16
  GpuFloat scale = GpuFloat::kF16;    // kF16, kBF16 or kF32
  int splits = 0;                     // K chunks per output tile; the launcher deals tiles x splits
                                      // units to min(tiles x splits, one wave) CTAs (stream-K); 0 = choose
  int wgmma = -1;                     // the Hopper wgmma GEMM (qgemm_wg_cuda.h): -1 where it is the faster
                                      // (by M), 0 never, 1 wherever it can run
  int cluster_sum = -1;               // the wgmma GEMM's split-K sum: 1 in a thread-block cluster's shared
                                      // memory, 0 through workspace and counters, -1 the planner's choice
                                      // (qgemm_tc_plan sets the one that runs)
};

// K % 64 == 0, N % 32 == 0, group as above.
bool qgemm_tc_supported(int64_t N, int64_t K, int64_t group_size);

// The K-chunk count (stream-K units per tile) the launcher will use for these sizes on the current
// device, and the scratch it needs (none for up to 8 rows of x, which the few-rows kernel of
// qgemm_few_cuda.h serves where x fits in shared memory). qgemm_tc_plan fills args.splits when it
// is 0; on the wgmma path it writes the count and the sum that will run into args.splits and
// args.cluster_sum (a forced count may come back smaller), so planning another shape with the
// same struct needs splits = 0 and cluster_sum = -1 again.
int qgemm_tc_plan(QGemmTcArgs& args);
int64_t qgemm_tc_workspace(const QGemmTcArgs& args);  // floats; 0 without split-K
int64_t qgemm_tc_counters(const QGemmTcArgs& args);   // int32 counters; 0 without split-K

// Launches on `stream` (a cudaStream_t); returns a cudaError_t code (0 = ok).
// Call qgemm_tc_plan first and pass the scratch it asks for.
int qgemm_tc_cuda(const QGemmTcArgs& args, void* stream);

}  // namespace quantcore::kernels
