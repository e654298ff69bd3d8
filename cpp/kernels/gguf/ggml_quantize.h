// Quantization of one row to a ggml block type, as ggml's reference quantizers
// do it: without an importance matrix, Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 are bit-exact
// with ggml's quantize_row_*_ref (and with gguf-py's quantize); the K-quants
// fit each sub-block's scale (and min) by a weighted least-squares search,
// quantize those under one fp16 super-scale and recompute the codes.
//
// `importance` (optional, length n, the same for every row of a matrix) is the
// per-input-column mean of x^2 over calibration tokens, llama.cpp's imatrix:
// the fits then minimise the error weighted by it, as llama.cpp does with
// --imatrix (Q8_0 ignores it there, and here).
#pragma once

#include <cstdint>

namespace quantcore::kernels::gguf {

// Writes n / block_elems blocks of `type_id` for the n floats of `x` into `dst`.
// Throws KernelError for an unsupported type, an n that is not a multiple of
// the block, or non-finite input.
void quantize_row(uint32_t type_id, const float* x, uint8_t* dst, int64_t n, const float* importance);

}  // namespace quantcore::kernels::gguf
