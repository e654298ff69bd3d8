// CPU implementation of quantcore::rtn_quantize.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "finite.h"
#include "rtn.h"
#include "rtn_checks.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> rtn_quantize_cpu(
    const at::Tensor& weight, int64_t bits, int64_t group_size, bool symmetric, bool mse_clip,
    int64_t clip_grid, double clip_max_shrink, at::ScalarType scale_dtype) {
  constexpr const char* op = "quantcore.rtn_quantize";
  check_cpu(weight, op, "weight");
  check_rtn_args(weight, bits, group_size, mse_clip, clip_grid, clip_max_shrink, scale_dtype, op);
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const kernels::ScaleType st = scale_type(scale_dtype, op);

  at::Tensor w = weight.to(at::kFloat);  // a copy for f16/bf16; the input is never written
  TORCH_CHECK_VALUE(algorithms::all_finite(w), op, ": weight contains NaN or Inf");

  // Per-tensor quantization is one group spanning the whole matrix.
  const bool per_tensor = group_size == 0;
  const int64_t k_rows = per_tensor ? 1 : rows;
  const int64_t k_cols = per_tensor ? rows * cols : cols;
  kernels::RtnParams p;
  p.bits = int(bits);
  p.symmetric = symmetric;
  p.group_size = group_size > 0 ? group_size : k_cols;
  p.mse_clip = mse_clip;
  p.clip_grid = int(clip_grid);
  p.clip_max_shrink = float(clip_max_shrink);
  p.scale_type = st;
  const int64_t groups = k_cols / p.group_size;

  at::Tensor codes = at::empty({rows, cols}, weight.options().dtype(at::kByte));
  at::Tensor scales = at::empty({k_rows, groups}, weight.options().dtype(at::kFloat));
  at::Tensor zeros = at::empty({k_rows, groups}, weight.options().dtype(at::kByte));
  run_kernel(op, [&] {
    kernels::rtn_validate(p, k_cols);
    const int64_t grain = std::max<int64_t>(1, (1 << 16) / k_cols);
    at::parallel_for(0, k_rows, grain, [&](int64_t b, int64_t e) {
      kernels::rtn_quantize_rows(w.data_ptr<float>(), k_cols, p, codes.data_ptr<uint8_t>(),
                                 scales.data_ptr<float>(), zeros.data_ptr<uint8_t>(), b, e);
    });
  });
  return {codes, scales.to(scale_dtype), zeros};
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CPU, m) { m.impl("rtn_quantize", &rtn_quantize_cpu); }

}  // namespace quantcore::bindings
