// Which implementation quantcore.qlinear uses, for tests and benchmarks.
#pragma once

#include <cstdint>
#include <string>

namespace quantcore::bindings {

// "auto" (default), "dequant_mm" (dense GEMM on dequantized panels whenever the
// activations are fp32/fp16), or a fused kernel path name ("rows_f32",
// "rows_bf16", "tiles_bf16"), which also disables the dense-GEMM path.
void force_qlinear_path(const std::string& name);

// Whether quantcore.qlinear runs M rows of this activation dtype ("float32",
// "float16", "bfloat16") as a dense GEMM on dequantized panels, under the
// current forcing.
bool qlinear_uses_dequant_mm(const std::string& x_dtype, int64_t M);

}  // namespace quantcore::bindings
