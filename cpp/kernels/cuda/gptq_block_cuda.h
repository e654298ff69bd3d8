// GPTQ's in-block loop (see ../gptq_block.h) as a CUDA kernel. Free of CUDA and
// torch headers, so host code compiled by the C++ compiler can call it.
#pragma once

#include <cstdint>

#include "gptq_block.h"

namespace quantcore::kernels {

// Widest block the kernel holds in registers (GPTQ's default block size).
constexpr int64_t kGptqCudaMaxBlock = 128;

// Runs the block for rows [0, rows) on `stream` (a cudaStream_t). Every pointer
// in b is device memory; `loss` (device, one double) accumulates sum(err^2).
// Returns a cudaError_t code (0 = launched).
int gptq_block_rows_cuda(const GptqBlock& b, int64_t rows, double* loss, void* stream);

const char* cuda_error_string(int code);

}  // namespace quantcore::kernels
