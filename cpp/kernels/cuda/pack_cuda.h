// Bit packing on the GPU, the byte stream of cpp/kernels/pack.h: code j of a
// row occupies bits [j * bits, (j + 1) * bits) of the row's little-endian
// stream, for 8- and 32-bit words alike. Free of CUDA and torch headers.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

// codes: rows x cols (uint8 / int8 bytes; only the low `bits` bits are kept);
// out: rows x (cols * bits / 8) bytes. Returns a cudaError_t code.
int pack_cuda(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out, void* stream);

// Inverse; sign_extend turns the stored bits back into int8 values.
int unpack_cuda(const uint8_t* packed, int64_t rows, int64_t cols, int bits, bool sign_extend, uint8_t* codes,
                void* stream);

}  // namespace quantcore::kernels
