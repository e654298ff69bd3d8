// Argument checks of quantcore::rtn_quantize shared by the CPU and CUDA
// implementations (the device check is each implementation's own).
#pragma once

#include <ATen/ATen.h>

#include "tensor_checks.h"

namespace quantcore::bindings {

inline void check_rtn_args(const at::Tensor& weight, int64_t bits, int64_t group_size, bool mse_clip,
                           int64_t clip_grid, double clip_max_shrink, at::ScalarType scale_dtype, const char* op) {
  check_float(weight, op, "weight");
  check_contiguous(weight, op, "weight");
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": weight must be 2-D [rows, cols], got ", weight.dim(), "-D");
  TORCH_CHECK_VALUE(weight.numel() > 0, op, ": weight is empty");
  check_bits(bits, 2, 8, op);
  const int64_t cols = weight.size(1);
  TORCH_CHECK_VALUE(group_size == -1 || group_size == 0 || group_size > 0, op,
                    ": group_size must be > 0, -1 (per channel) or 0 (per tensor), got ", group_size);
  TORCH_CHECK_VALUE(group_size <= 0 || cols % group_size == 0, op, ": group_size ", group_size,
                    " does not divide the number of input columns ", cols);
  TORCH_CHECK_VALUE(!mse_clip || (clip_grid >= 1 && clip_max_shrink >= 0 && clip_max_shrink < 1), op,
                    ": clip_grid must be >= 1 and clip_max_shrink in [0, 1)");
  (void)scale_type(scale_dtype, op);  // raises for an unsupported scale dtype
}

}  // namespace quantcore::bindings
