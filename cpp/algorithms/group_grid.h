// RTN grids computed with ATen, for tensors on any device: the rules of
// cpp/kernels/rtn.h (symmetric s = 2 max|w| / maxq with z = 2^(bits-1);
// asymmetric over [min(w,0), max(w,0)]), scales rounded to their storage dtype
// and floored where they underflow it. CPU callers use the kernel itself.
#pragma once

#include <ATen/core/Tensor.h>

namespace quantcore::algorithms {

struct GridSpec {
  int bits = 4;
  bool symmetric = true;
  at::ScalarType scale_dtype = at::kHalf;
};

struct Grid {
  at::Tensor scale;  // float32, one per group, with a trailing dim of 1
  at::Tensor zero;   // float32 (integral values), same shape
};

// Grid for ranges lo/hi (any shape; the result gets a trailing dim of 1).
Grid make_grid(const at::Tensor& lo, const at::Tensor& hi, const GridSpec& spec);

// Codes of w under g (g broadcasts against w's last dim).
at::Tensor quantize_codes(const at::Tensor& w, const Grid& g, int bits);

}  // namespace quantcore::algorithms
