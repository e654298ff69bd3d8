// GPTQ's in-block loop on the GPU: one warp per weight row, lane l holding
// block columns l, l + 32, l + 64 and l + 96 in registers. Column i's value is
// broadcast from its owner lane, every lane computes the same code and error,
// and each lane updates its own later columns. Operations use the _rn
// intrinsics, so nothing is fused into an FMA and the arithmetic is torch's:
// the same codes as the reference run with PyTorch on the GPU.
#include <cuda_runtime.h>

#include "gptq_block_cuda.h"

namespace quantcore::kernels {

namespace {

constexpr int kWarp = 32;
constexpr int kSlots = kGptqCudaMaxBlock / kWarp;
constexpr int kWarpsPerCta = 8;

__global__ void gptq_block_kernel(GptqBlock b, int64_t rows, float maxq, double* loss) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerCta + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;  // whole warps exit together
  float* w = b.w + row * b.ld_w;
  float v[kSlots];
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    const int64_t j = lane + k * kWarp;
    v[k] = j < b.count ? w[j] : 0.f;
  }
  const float* scales = b.scales + row * b.ld_grid;
  const float* zeros = b.zeros + row * b.ld_grid;
  double row_loss = 0;
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    for (int ii = 0; ii < kWarp; ++ii) {
      const int i = k * kWarp + ii;
      if (i >= b.count) break;  // uniform across the warp
      const float* h = b.hinv + int64_t(i) * b.ld_h;
      const int g = b.grid_of[i];
      const float scale = scales[g], zero = zeros[g];
      const float x = __shfl_sync(0xffffffffu, v[k], ii);
      const float code = fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(x, scale)), zero), 0.f), maxq);
      const float e = __fdiv_rn(__fsub_rn(x, __fmul_rn(__fsub_rn(code, zero), scale)), h[i]);
      if (lane == ii) {
        b.codes[row * b.ld_codes + i] = static_cast<uint8_t>(code);
        b.err[row * b.ld_err + i] = e;
        row_loss += double(e) * double(e);
      }
      // Later columns only: the owner's own and earlier slots are final.
#pragma unroll
      for (int kk = 0; kk < kSlots; ++kk) {
        const int j = lane + kk * kWarp;
        if (j > i && j < b.count) v[kk] = __fsub_rn(v[kk], __fmul_rn(e, h[j]));
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    const int64_t j = lane + k * kWarp;
    if (j < b.count) w[j] = v[k];
  }
  for (int off = kWarp / 2; off > 0; off /= 2) row_loss += __shfl_down_sync(0xffffffffu, row_loss, off);
  if (lane == 0) atomicAdd(loss, row_loss);
}

}  // namespace

int gptq_block_rows_cuda(const GptqBlock& b, int64_t rows, double* loss, void* stream) {
  if (b.count < 1 || b.count > kGptqCudaMaxBlock) return int(cudaErrorInvalidValue);
  if (rows == 0) return 0;
  const unsigned ctas = unsigned((rows + kWarpsPerCta - 1) / kWarpsPerCta);
  gptq_block_kernel<<<ctas, kWarpsPerCta * kWarp, 0, static_cast<cudaStream_t>(stream)>>>(
      b, rows, float((1 << b.bits) - 1), loss);
  return int(cudaGetLastError());
}

const char* cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace quantcore::kernels
