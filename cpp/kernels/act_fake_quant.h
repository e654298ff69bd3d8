// Dynamic per-token fake quantization of activations (QAT's "int8 per-token"
// and the inference path of layers trained with it): each row of x gets RTN's
// min/max grid of its own values (rtn.h: symmetric s = 2 max|x| / qmax with
// zero 2^(bits-1), or the asymmetric range [min(x,0), max(x,0)]), fp32 scales,
// and comes back quantized and dequantized:
//   y = (clamp(round_half_even(x / s) + z, 0, qmax) - z) * s,
// exactly what rtn_quantize_rows (group = cols, fp32 scales) followed by
// dequantization gives. A row holding NaN or Inf comes back all NaN, so a
// diverging run shows in the loss instead of being clamped away.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

// Rows [row_begin, row_end) of the row-major [rows, cols] x into y.
void fake_quant_per_token_rows(const float* x, int64_t cols, int bits, bool symmetric, float* y, int64_t row_begin,
                               int64_t row_end);

}  // namespace quantcore::kernels
