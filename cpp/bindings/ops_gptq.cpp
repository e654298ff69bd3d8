// quantcore::gptq_quantize, gptq_inverse_factor and gptq_hessian_update: argument checks
// around cpp/algorithms/gptq.cpp. The solver is written with ATen, so one
// registration (CompositeExplicitAutograd) serves CPU and CUDA tensors.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "finite.h"
#include "gptq.h"
#include "inverse_factor.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gptq_quantize_op(
    const at::Tensor& weight, const at::Tensor& hessian, int64_t bits, int64_t group_size, bool symmetric,
    bool act_order, bool static_groups, double percdamp, int64_t block_size, bool mse_clip,
    at::ScalarType scale_dtype) {
  constexpr const char* op = "quantcore.gptq_quantize";
  check_float(weight, op, "weight");
  check_dtype(hessian, at::kFloat, op, "hessian");
  check_bits(bits, 2, 8, op);
  scale_type(scale_dtype, op);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.numel() > 0, op, ": weight must be a non-empty 2-D tensor");
  const int64_t cols = weight.size(1);
  TORCH_CHECK_VALUE(hessian.dim() == 2 && hessian.size(0) == cols && hessian.size(1) == cols, op,
                    ": hessian must be [", cols, ", ", cols, "], got ", hessian.sizes());
  TORCH_CHECK_VALUE(weight.device() == hessian.device(), op, ": weight and hessian must be on one device");
  TORCH_CHECK_VALUE(group_size == -1 || (group_size > 0 && cols % group_size == 0), op, ": group_size ",
                    group_size, " must divide the ", cols, " input columns (or be -1)");
  TORCH_CHECK_VALUE(block_size > 0, op, ": block_size must be positive");
  TORCH_CHECK_VALUE(percdamp >= 0 && percdamp < 10, op, ": percdamp must be in [0, 10)");
  algorithms::GptqOptions opt;
  opt.bits = int(bits);
  opt.group_size = group_size;
  opt.symmetric = symmetric;
  opt.act_order = act_order;
  opt.static_groups = static_groups;
  opt.percdamp = percdamp;
  opt.block_size = block_size;
  opt.mse_clip = mse_clip;
  opt.scale_dtype = scale_dtype;
  algorithms::GptqResult r = algorithms::gptq_quantize(weight, hessian, opt);
  const double fallback = r.fallback.empty() ? 0.0 : r.fallback == "rtn" ? 2.0 : 1.0;
  at::Tensor info = at::tensor({r.damp_used, fallback, r.loss}, at::TensorOptions().dtype(at::kDouble));
  return {r.codes, r.scales, r.zeros, r.g_idx, info};
}

at::Tensor gptq_inverse_factor_op(const at::Tensor& hessian, double damp, int64_t block_size) {
  constexpr const char* op = "quantcore.gptq_inverse_factor";
  check_dtype(hessian, at::kFloat, op, "hessian");
  TORCH_CHECK_VALUE(hessian.dim() == 2 && hessian.size(0) == hessian.size(1) && hessian.size(0) > 0, op,
                    ": hessian must be a non-empty square matrix, got ", hessian.sizes());
  TORCH_CHECK_VALUE(block_size > 0, op, ": block_size must be positive");
  TORCH_CHECK_VALUE(std::isfinite(damp) && damp >= 0, op, ": damp must be finite and >= 0");
  TORCH_CHECK_VALUE(algorithms::all_finite(hessian), op, ": hessian contains NaN or Inf");
  at::Tensor g = hessian.flip({0, 1}).contiguous();  // J H J, factored in place
  g.diagonal().add_(damp);
  const int64_t n = g.size(0);
  const bool ok = algorithms::cholesky_lower_inplace(g, block_size) &&
                  (algorithms::invert_lower_inplace(g, block_size), algorithms::lower_finite(g, block_size));
  TORCH_CHECK_VALUE(ok, op, ": hessian + damp * I is not positive definite");
  return algorithms::upper_factor_block(g, 0, n, 0, n);
}

int64_t gptq_hessian_update_op(at::Tensor& hessian, const at::Tensor& x, int64_t samples_seen) {
  constexpr const char* op = "quantcore.gptq_hessian_update";
  check_dtype(hessian, at::kFloat, op, "hessian");
  check_float(x, op, "x");
  TORCH_CHECK_VALUE(hessian.dim() == 2 && hessian.size(0) == hessian.size(1), op, ": hessian must be square");
  TORCH_CHECK_VALUE(samples_seen >= 0, op, ": samples_seen must be >= 0");
  TORCH_CHECK_VALUE(hessian.device() == x.device(), op, ": hessian and x must be on one device");
  return algorithms::gptq_hessian_update(hessian, x, samples_seen);
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CompositeExplicitAutograd, m) {
  m.impl("gptq_quantize", &gptq_quantize_op);
  m.impl("gptq_hessian_update", &gptq_hessian_update_op);
  m.impl("gptq_inverse_factor", &gptq_inverse_factor_op);
}

}  // namespace quantcore::bindings
