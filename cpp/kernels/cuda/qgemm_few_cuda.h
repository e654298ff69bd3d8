// W4A16 GEMM for 1-8 rows of x (qgemm_few_cuda.cu), on the tensor-core layout
// of qgemm_tc_cuda.h and with its arguments; qgemm_tc_cuda() calls it for the
// sizes it takes. It needs no workspace.
//
// Free of CUDA and torch headers.
#pragma once

#include "qgemm_tc_cuda.h"

namespace quantcore::kernels {

// Whether the few-rows kernel serves these sizes on the current device
// (1 <= M <= 8, and x fits in shared memory).
bool qgemm_few_ok(const QGemmTcArgs& args);
// Launches on `stream` (a cudaStream_t); returns a cudaError_t code.
int qgemm_few_cuda(const QGemmTcArgs& args, void* stream);

}  // namespace quantcore::kernels
