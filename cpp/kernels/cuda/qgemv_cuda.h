// Weight-only quantized GEMV on the GPU: y[M, N] = x[M, K] @ dequant(W)^T + bias
// for small M (decode), reading W in the canonical layout (qweight int32
// [N, K * bits / 32], code j of a word at bits bits*j; scales [N, K / group];
// optional uint8 zeros, symmetric meaning 2^(bits-1)). Free of CUDA and torch
// headers, so host code built by the C++ compiler can call it.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

enum class GpuFloat { kF16, kBF16, kF32 };

struct QGemvArgs {
  const void* x = nullptr;          // [M, K] activations, act type, rows contiguous
  const int32_t* qweight = nullptr; // [N, K * bits / 32]
  const void* scales = nullptr;     // [N, K / group_size], scale type
  const uint8_t* zeros = nullptr;   // [N, K / group_size] or null (symmetric)
  const void* bias = nullptr;       // [N], act type, or null
  void* y = nullptr;                // [M, N], act type
  int64_t M = 0, N = 0, K = 0;
  int bits = 4;                     // 4 or 8
  int64_t group_size = 128;         // a multiple of 32 (W4) / 16 (W8) dividing K
  GpuFloat act = GpuFloat::kF16;    // kF16 or kBF16
  GpuFloat scale = GpuFloat::kF16;
};

// Largest M the GEMV handles in one pass over the weights; larger M runs in
// passes of this many rows.
constexpr int64_t kQGemvMaxM = 4;

// True when the kernel supports these sizes (K % 32 == 0, group as above).
bool qgemv_supported(int bits, int64_t K, int64_t group_size);

// Launches on `stream` (a cudaStream_t); returns a cudaError_t code (0 = ok).
int qgemv_cuda(const QGemvArgs& a, void* stream);

}  // namespace quantcore::kernels
