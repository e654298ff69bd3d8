// Internal: the 32-element block types (see ggml_quantize.h for the contract).
#pragma once

#include <cstdint>

#include "ggml_types.h"

namespace quantcore::kernels::gguf {

void quantize_legacy_row(GgmlType type, const float* x, uint8_t* dst, int64_t n, const float* importance);

}  // namespace quantcore::kernels::gguf
