// Argument checks of quantcore::qat_fake_quantize(_backward) shared by the CPU
// and CUDA implementations (the device check is each implementation's own).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "qat_fake_quant.h"
#include "tensor_checks.h"

namespace quantcore::bindings {

struct QatArgs {
  at::Tensor x, scale, zero;  // contiguous; scale and zero float32, x float32 unless kept in its dtype
  kernels::FakeQuantGrid grid;
  int64_t rows, cols;
};

// Checks the arguments and converts them to contiguous float32 on their device.
// check_values: also require finite positive scales and finite zero points
// (a host sync on a GPU, where the CUDA path leaves it to the caller:
// quantcore.qat's modules clamp their scales).
// grid_dtype set: a learnable grid the kernels snap (then the scales only need
// to be finite) and grad_factor for its gradients.
inline QatArgs prepare_qat_args(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
                                int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype,
                                double grad_factor, const char* op, bool check_values = true,
                                bool x_as_float = true) {
  TORCH_CHECK_VALUE(scale.device() == x.device(), op, ": scale must be on x's device");
  check_float(x, op, "x");
  check_float(scale, op, "scale");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(x.dim() == 2 && x.numel() > 0, op, ": x must be a non-empty 2-D tensor [rows, cols], got ",
                    x.sizes());
  const int64_t rows = x.size(0), cols = x.size(1);
  TORCH_CHECK_VALUE(group_size > 0 && cols % group_size == 0, op, ": group_size ", group_size,
                    " must be positive and divide the ", cols, " columns");
  const int64_t groups = cols / group_size;
  TORCH_CHECK_VALUE(scale.dim() == 2 && (scale.size(0) == rows || scale.size(0) == 1) && scale.size(1) == groups, op,
                    ": scale must be [", rows, " or 1, ", groups, "], got ", scale.sizes());
  QatArgs p;
  p.rows = rows;
  p.cols = cols;
  p.x = x_as_float ? x.to(at::kFloat).contiguous() : x.contiguous();
  p.scale = scale.to(at::kFloat).contiguous();
  if (check_values) {
    // A learnable grid may hold non-positive raw scales: the kernels floor them.
    const bool ok = at::isfinite(p.scale).all().item<bool>() && (grid_dtype || (p.scale > 0).all().item<bool>());
    TORCH_CHECK_VALUE(ok, op, grid_dtype ? ": scale contains NaN or Inf" : ": scale must be finite and positive");
  }
  if (zero) {
    TORCH_CHECK_VALUE(zero->device() == x.device(), op, ": zero must be on x's device");
    check_float(*zero, op, "zero");
    TORCH_CHECK_VALUE(zero->sizes() == scale.sizes(), op, ": zero must have the shape of scale");
    p.zero = zero->to(at::kFloat).contiguous();
    if (check_values) TORCH_CHECK_VALUE(at::isfinite(p.zero).all().item<bool>(), op, ": zero contains NaN or Inf");
  }
  p.grid.scale = p.scale.data_ptr<float>();
  p.grid.zero = p.zero.defined() ? p.zero.data_ptr<float>() : nullptr;
  p.grid.row_per_row = scale.size(0) == rows;
  p.grid.group = group_size;
  p.grid.bits = int(bits);
  p.grid.snap = grid_dtype.has_value();
  if (grid_dtype) p.grid.scale_type = scale_type(*grid_dtype, op);
  TORCH_CHECK_VALUE(std::isfinite(grad_factor), op, ": grad_factor must be finite");
  p.grid.grad_factor = float(grad_factor);
  return p;
}

}  // namespace quantcore::bindings

namespace quantcore::bindings {

struct PerTokenArgs {
  at::Tensor x;  // [rows, cols], contiguous, x's dtype
  int64_t rows, cols;
};

// quantcore::fake_quantize_per_token's checks: x float [..., cols], cols > 0.
inline PerTokenArgs prepare_per_token_args(const at::Tensor& x, int64_t bits, const char* op) {
  check_float(x, op, "x");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) > 0, op, ": x must be [..., features] with features > 0, got ",
                    x.sizes());
  PerTokenArgs p;
  p.cols = x.size(-1);
  p.rows = x.numel() / p.cols;
  p.x = x.reshape({p.rows, p.cols}).contiguous();
  return p;
}

}  // namespace quantcore::bindings
