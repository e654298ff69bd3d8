// quantcore::fake_quantize_groups, awq_search_scale, awq_search_clip: argument
// checks around cpp/algorithms/awq.cpp (ATen, so one registration serves CPU
// and CUDA tensors).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "finite.h"
#include "awq.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

algorithms::AwqGrid make_awq_grid(const at::Tensor& weight, int64_t bits, int64_t group_size, bool symmetric,
                                  at::ScalarType scale_dtype, const char* op) {
  check_float(weight, op, "weight");
  check_bits(bits, 2, 8, op);
  scale_type(scale_dtype, op);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.numel() > 0, op, ": weight must be a non-empty 2-D tensor, got ",
                    weight.sizes());
  const int64_t cols = weight.size(1);
  TORCH_CHECK_VALUE(group_size == -1 || (group_size > 0 && cols % group_size == 0), op, ": group_size ",
                    group_size, " must divide the ", cols, " input columns (or be -1)");
  TORCH_CHECK_VALUE(algorithms::all_finite(weight), op, ": weight contains NaN or Inf");
  algorithms::AwqGrid grid;
  grid.spec = {int(bits), symmetric, scale_dtype};
  grid.group_size = group_size;
  return grid;
}

void check_hessian(const at::Tensor& hessian, const at::Tensor& weight, const char* op) {
  check_dtype(hessian, at::kFloat, op, "hessian");
  const int64_t cols = weight.size(1);
  TORCH_CHECK_VALUE(hessian.dim() == 2 && hessian.size(0) == cols && hessian.size(1) == cols, op,
                    ": hessian must be [", cols, ", ", cols, "], got ", hessian.sizes());
  TORCH_CHECK_VALUE(hessian.device() == weight.device(), op, ": weight and hessian must be on one device");
  TORCH_CHECK_VALUE(algorithms::all_finite(hessian), op, ": hessian contains NaN or Inf");
}

// A per-column vector [cols] of finite, non-negative (or positive) values.
at::Tensor column_vector(const at::Tensor& t, const at::Tensor& weight, const char* op, const char* name,
                         bool positive) {
  check_float(t, op, name);
  const int64_t cols = weight.size(1);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == cols, op, ": ", name, " must be [", cols, "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == weight.device(), op, ": ", name, " must be on the weight's device");
  at::Tensor f = t.to(at::kFloat);
  TORCH_CHECK_VALUE(algorithms::all_finite(f), op, ": ", name, " contains NaN or Inf");
  TORCH_CHECK_VALUE(positive ? (f > 0).all().item<bool>() : (f >= 0).all().item<bool>(), op, ": ", name,
                    positive ? " must be positive" : " must be non-negative");
  return f;
}

at::Tensor fake_quantize_groups_op(const at::Tensor& weight, const std::optional<at::Tensor>& col_scale,
                                   const std::optional<at::Tensor>& clip, int64_t bits, int64_t group_size,
                                   bool symmetric, at::ScalarType scale_dtype) {
  constexpr const char* op = "quantcore.fake_quantize_groups";
  algorithms::AwqGrid grid = make_awq_grid(weight, bits, group_size, symmetric, scale_dtype, op);
  at::Tensor s, m;
  if (col_scale) s = column_vector(*col_scale, weight, op, "col_scale", true);
  if (clip) {
    const int64_t groups = group_size > 0 ? weight.size(1) / group_size : 1;
    TORCH_CHECK_VALUE(clip->dim() == 2 && clip->size(0) == weight.size(0) && clip->size(1) == groups, op,
                      ": clip must be [", weight.size(0), ", ", groups, "], got ", clip->sizes());
    TORCH_CHECK_VALUE(clip->device() == weight.device(), op, ": clip must be on the weight's device");
    check_float(*clip, op, "clip");
    m = clip->to(at::kFloat);
    TORCH_CHECK_VALUE(algorithms::all_finite(m) && (m >= 0).all().item<bool>(), op,
                      ": clip must be finite and non-negative");
  }
  return algorithms::fake_quantize_groups(weight, s, m, grid);
}

std::tuple<at::Tensor, at::Tensor> awq_search_scale_op(
    const at::Tensor& weight, const at::Tensor& hessian, const at::Tensor& x_mean,
    const std::optional<at::Tensor>& prev_absmax, int64_t bits, int64_t group_size, bool symmetric, int64_t n_grid,
    bool duo_scaling, double max_abs, at::ScalarType scale_dtype) {
  constexpr const char* op = "quantcore.awq_search_scale";
  algorithms::AwqScaleOptions opt;
  opt.grid = make_awq_grid(weight, bits, group_size, symmetric, scale_dtype, op);
  check_hessian(hessian, weight, op);
  TORCH_CHECK_VALUE(n_grid >= 1 && n_grid <= 1000, op, ": n_grid must be in [1, 1000], got ", n_grid);
  TORCH_CHECK_VALUE(max_abs >= 0, op, ": max_abs must be >= 0 (0: no limit)");
  opt.n_grid = n_grid;
  opt.duo_scaling = duo_scaling;
  opt.max_abs = max_abs;
  at::Tensor xm = column_vector(x_mean, weight, op, "x_mean", false);
  at::Tensor prev = prev_absmax ? column_vector(*prev_absmax, weight, op, "prev_absmax", false) : at::Tensor();
  algorithms::AwqScaleResult r = algorithms::awq_search_scale(weight, hessian, xm, prev, opt);
  return {r.scales, r.losses};
}

at::Tensor awq_search_clip_op(const at::Tensor& weight, const at::Tensor& hessian, int64_t bits,
                              int64_t group_size, bool symmetric, int64_t n_grid, double max_shrink,
                              at::ScalarType scale_dtype) {
  constexpr const char* op = "quantcore.awq_search_clip";
  algorithms::AwqGrid grid = make_awq_grid(weight, bits, group_size, symmetric, scale_dtype, op);
  check_hessian(hessian, weight, op);
  TORCH_CHECK_VALUE(n_grid >= 1 && n_grid <= 1000, op, ": n_grid must be in [1, 1000], got ", n_grid);
  TORCH_CHECK_VALUE(max_shrink >= 0 && max_shrink < 1, op, ": max_shrink must be in [0, 1), got ", max_shrink);
  return algorithms::awq_search_clip(weight, hessian, grid, n_grid, max_shrink);
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CompositeExplicitAutograd, m) {
  m.impl("fake_quantize_groups", &fake_quantize_groups_op);
  m.impl("awq_search_scale", &awq_search_scale_op);
  m.impl("awq_search_clip", &awq_search_clip_op);
}

}  // namespace quantcore::bindings
