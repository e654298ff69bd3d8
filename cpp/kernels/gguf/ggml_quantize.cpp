#include "ggml_quantize.h"

#include <cmath>
#include <string>

#include "../status.h"
#include "ggml_quantize_kquants.h"
#include "ggml_quantize_legacy.h"
#include "ggml_types.h"

namespace quantcore::kernels::gguf {

void quantize_row(uint32_t type_id, const float* x, uint8_t* dst, int64_t n, const float* importance) {
  const TypeSize ts = type_size(type_id);
  QC_REQUIRE(ts.block_elems > 1, "gguf: cannot quantize to ggml type " + std::to_string(type_id));
  QC_REQUIRE(n >= 0 && n % ts.block_elems == 0, "gguf: row length " + std::to_string(n) +
                                                    " is not a multiple of the block size " +
                                                    std::to_string(ts.block_elems));
  for (int64_t i = 0; i < n; ++i) QC_REQUIRE(std::isfinite(x[i]), "gguf: input contains NaN or Inf");
  const auto type = static_cast<GgmlType>(type_id);
  if (ts.block_elems == kLegacyBlock) quantize_legacy_row(type, x, dst, n, importance);
  else quantize_kquant_row(type, x, dst, n, importance);
}

}  // namespace quantcore::kernels::gguf
