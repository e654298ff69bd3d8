// CPU implementations of quantcore::qat_fake_quantize and its backward
// (kernels in cpp/kernels/qat_fake_quant.cpp). Autograd, the LSQ gradient
// scale and the straight-through rounding of learnable scales and zero points
// are wired in python/quantcore/qat.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "qat_fake_quant.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

struct Prepared {
  at::Tensor x, scale, zero;  // float32, contiguous
  kernels::FakeQuantGrid grid;
  int64_t rows, cols;
};

Prepared prepare(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero, int64_t bits,
                 int64_t group_size, const char* op) {
  check_cpu(x, op, "x");
  check_cpu(scale, op, "scale");
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
  Prepared p;
  p.rows = rows;
  p.cols = cols;
  p.x = x.to(at::kFloat).contiguous();
  p.scale = scale.to(at::kFloat).contiguous();
  TORCH_CHECK_VALUE((p.scale > 0).all().item<bool>() && at::isfinite(p.scale).all().item<bool>(), op,
                    ": scale must be finite and positive");
  if (zero) {
    check_cpu(*zero, op, "zero");
    check_float(*zero, op, "zero");
    TORCH_CHECK_VALUE(zero->sizes() == scale.sizes(), op, ": zero must have the shape of scale");
    p.zero = zero->to(at::kFloat).contiguous();
    TORCH_CHECK_VALUE(at::isfinite(p.zero).all().item<bool>(), op, ": zero contains NaN or Inf");
  }
  p.grid.scale = p.scale.data_ptr<float>();
  p.grid.zero = p.zero.defined() ? p.zero.data_ptr<float>() : nullptr;
  p.grid.row_per_row = scale.size(0) == rows;
  p.grid.group = group_size;
  p.grid.bits = int(bits);
  return p;
}

int64_t grain(int64_t cols) { return std::max<int64_t>(1, (1 << 15) / cols); }

at::Tensor qat_fake_quantize_cpu(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
                                 int64_t bits, int64_t group_size) {
  constexpr const char* op = "quantcore.qat_fake_quantize";
  const Prepared p = prepare(x, scale, zero, bits, group_size, op);
  at::Tensor y = at::empty({p.rows, p.cols}, p.x.options());
  at::parallel_for(0, p.rows, grain(p.cols), [&](int64_t b, int64_t e) {
    kernels::qat_fake_quant_rows(p.x.data_ptr<float>(), p.cols, p.grid, y.data_ptr<float>(), b, e);
  });
  return y.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qat_fake_quantize_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
    int64_t bits, int64_t group_size) {
  constexpr const char* op = "quantcore.qat_fake_quantize_backward";
  const Prepared p = prepare(x, scale, zero, bits, group_size, op);
  check_cpu(grad, op, "grad");
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), op, ": grad must have the shape of x");
  const at::Tensor g = grad.to(at::kFloat).contiguous();
  const int64_t groups = p.cols / group_size;
  at::Tensor grad_x = at::empty({p.rows, p.cols}, p.x.options());
  at::Tensor gs = at::empty({p.rows, groups}, p.x.options());
  at::Tensor gz = at::empty({p.rows, groups}, p.x.options());
  at::parallel_for(0, p.rows, grain(p.cols), [&](int64_t b, int64_t e) {
    kernels::qat_fake_quant_backward_rows(g.data_ptr<float>(), p.x.data_ptr<float>(), p.cols, p.grid,
                                          grad_x.data_ptr<float>(), gs.data_ptr<float>(), gz.data_ptr<float>(), b, e);
  });
  if (!p.grid.row_per_row) {  // a shared grid: add the rows' contributions
    gs = gs.sum(0, /*keepdim=*/true);
    gz = gz.sum(0, /*keepdim=*/true);
  }
  if (!zero) gz.zero_();
  return {grad_x.to(x.scalar_type()), gs, gz};
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CPU, m) {
  m.impl("qat_fake_quantize", &qat_fake_quantize_cpu);
  m.impl("qat_fake_quantize_backward", &qat_fake_quantize_backward_cpu);
}

}  // namespace quantcore::bindings
