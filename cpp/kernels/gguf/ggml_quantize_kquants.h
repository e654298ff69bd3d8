// Internal: the 256-element super-block types (see ggml_quantize.h).
#pragma once

#include <cstdint>

#include "ggml_types.h"

namespace quantcore::kernels::gguf {

void quantize_kquant_row(GgmlType type, const float* x, uint8_t* dst, int64_t n, const float* importance);

}  // namespace quantcore::kernels::gguf
