// CPU implementations of quantcore::qat_fake_quantize, its backward and
// quantcore::fake_quantize_per_token (kernels in cpp/kernels/qat_fake_quant.cpp
// and act_fake_quant.cpp). Their autograd is in ops_qat_autograd.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "act_fake_quant.h"
#include "qat_checks.h"
#include "qat_fake_quant.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

int64_t grain(int64_t cols) { return std::max<int64_t>(1, (1 << 15) / cols); }

at::Tensor qat_fake_quantize_cpu(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
                                 int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype,
                                 double grad_factor) {
  constexpr const char* op = "quantcore.qat_fake_quantize";
  check_cpu(x, op, "x");
  const QatArgs p = prepare_qat_args(x, scale, zero, bits, group_size, grid_dtype, grad_factor, op);
  at::Tensor y = at::empty({p.rows, p.cols}, p.x.options());
  at::parallel_for(0, p.rows, grain(p.cols), [&](int64_t b, int64_t e) {
    kernels::qat_fake_quant_rows(p.x.data_ptr<float>(), p.cols, p.grid, y.data_ptr<float>(), b, e);
  });
  return y.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qat_fake_quantize_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
    int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype, double grad_factor) {
  constexpr const char* op = "quantcore.qat_fake_quantize_backward";
  check_cpu(x, op, "x");
  const QatArgs p = prepare_qat_args(x, scale, zero, bits, group_size, grid_dtype, grad_factor, op);
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

at::Tensor fake_quantize_per_token_cpu(const at::Tensor& x, int64_t bits, bool symmetric) {
  constexpr const char* op = "quantcore.fake_quantize_per_token";
  check_cpu(x, op, "x");
  const PerTokenArgs p = prepare_per_token_args(x, bits, op);
  const at::Tensor xf = p.x.to(at::kFloat);
  at::Tensor y = at::empty_like(xf);
  at::parallel_for(0, p.rows, grain(p.cols), [&](int64_t b, int64_t e) {
    kernels::fake_quant_per_token_rows(xf.data_ptr<float>(), p.cols, int(bits), symmetric, y.data_ptr<float>(), b,
                                       e);
  });
  return y.to(x.scalar_type()).view(x.sizes());
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CPU, m) {
  m.impl("qat_fake_quantize", &qat_fake_quantize_cpu);
  m.impl("qat_fake_quantize_backward", &qat_fake_quantize_backward_cpu);
  m.impl("fake_quantize_per_token", &fake_quantize_per_token_cpu);
}

}  // namespace quantcore::bindings
