// One thread per output byte (pack) or per code (unpack): a code of at most 8
// bits touches at most two bytes, and a byte at most nine codes.
#include <cuda_runtime.h>

#include "pack_cuda.h"

namespace quantcore::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void pack_kernel(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out) {
  const int64_t row_bytes = cols * bits / 8;
  const int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= rows * row_bytes) return;
  const int64_t row = idx / row_bytes, byte = idx % row_bytes;
  const uint8_t* src = codes + row * cols;
  const uint32_t mask = (1u << bits) - 1u;
  const int64_t first = byte * 8 / bits, last = (byte * 8 + 7) / bits;
  uint32_t v = 0;
  for (int64_t j = first; j <= last && j < cols; ++j) {
    const int64_t shift = j * bits - byte * 8;  // where code j starts, relative to this byte
    const uint32_t c = uint32_t(src[j]) & mask;
    v |= shift >= 0 ? c << shift : c >> -shift;
  }
  out[idx] = uint8_t(v & 0xffu);
}

__global__ void unpack_kernel(const uint8_t* packed, int64_t rows, int64_t cols, int bits, bool sign_extend,
                              uint8_t* codes) {
  const int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t row = idx / cols, j = idx % cols;
  const int64_t row_bytes = cols * bits / 8;
  const uint8_t* src = packed + row * row_bytes;
  const int64_t bit = j * bits, byte = bit / 8;
  uint32_t v = src[byte];
  if (byte + 1 < row_bytes) v |= uint32_t(src[byte + 1]) << 8;
  v = (v >> (bit % 8)) & ((1u << bits) - 1u);
  if (sign_extend && (v >> (bits - 1)) & 1u) v |= ~((1u << bits) - 1u);
  codes[idx] = uint8_t(v & 0xffu);
}

}  // namespace

int pack_cuda(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out, void* stream) {
  if (bits < 1 || bits > 8 || cols * bits % 8) return int(cudaErrorInvalidValue);
  const int64_t n = rows * (cols * bits / 8);
  if (n == 0) return 0;
  pack_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      codes, rows, cols, bits, out);
  return int(cudaGetLastError());
}

int unpack_cuda(const uint8_t* packed, int64_t rows, int64_t cols, int bits, bool sign_extend, uint8_t* codes,
                void* stream) {
  if (bits < 1 || bits > 8 || cols * bits % 8) return int(cudaErrorInvalidValue);
  const int64_t n = rows * cols;
  if (n == 0) return 0;
  unpack_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      packed, rows, cols, bits, sign_extend, codes);
  return int(cudaGetLastError());
}

}  // namespace quantcore::kernels
