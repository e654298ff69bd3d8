// W4A16 GEMM on Hopper's warpgroup tensor cores (wgmma, sm_90a) for 9-256+
// rows of x, on the tensor-core layout of qgemm_tc_cuda.h. qgemm_tc_cuda()
// routes here where qgemm_wg_ok() holds; the plan / workspace / counters
// calls there answer for this kernel then.
//
// Free of CUDA and torch headers.
#pragma once

#include <cstdint>

#include "qgemm_tc_cuda.h"

namespace quantcore::kernels {

// Whether this build has the kernel's sm_90a code (CMAKE_CUDA_ARCHITECTURES with 90a).
bool qgemm_wg_built();

// Built with sm_90a code, running on an sm_90 GPU, and a shape this kernel takes.
bool qgemm_wg_ok(const QGemmTcArgs& args);

// K splits for these sizes and the split-K sum (sets args.splits and args.cluster_sum to
// what will run), then the scratch they need.
int qgemm_wg_plan(QGemmTcArgs& args);
int64_t qgemm_wg_workspace(const QGemmTcArgs& args);  // floats; 0 without split-K
int64_t qgemm_wg_counters(const QGemmTcArgs& args);   // int32 counters; 0 without split-K

// Launches on `stream` (a cudaStream_t); returns a cudaError_t code (0 = ok).
int qgemm_wg_cuda(const QGemmTcArgs& args, void* stream);

}  // namespace quantcore::kernels
