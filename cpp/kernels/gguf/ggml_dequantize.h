// Dequantization of one row of a ggml-typed tensor to float32, for every type
// in ggml_types.h. Exact: each value is d * integer (- dmin * integer), which
// float32 holds without rounding, so the result equals gguf-py's bit for bit.
#pragma once

#include <cstdint>

namespace quantcore::kernels::gguf {

// `n` elements (a multiple of the type's block) from `src` into `dst`.
// Throws KernelError for an unsupported type or a bad n.
void dequantize_row(uint32_t type_id, const uint8_t* src, float* dst, int64_t n);

}  // namespace quantcore::kernels::gguf
