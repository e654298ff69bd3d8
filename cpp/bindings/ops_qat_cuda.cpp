// CUDA implementations of quantcore::qat_fake_quantize, its backward and
// quantcore::fake_quantize_per_token (kernels in cpp/kernels/cuda/
// qat_fake_quant_cuda.cu and act_fake_quant_cuda.cu). No host syncs: the
// scales' validity is the caller's (quantcore.qat passes learnable grids, which
// the kernels snap). Built only with QUANTCORE_ENABLE_CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cuda/act_fake_quant_cuda.h"
#include "cuda/gptq_block_cuda.h"
#include "cuda/qat_fake_quant_cuda.h"
#include "qat_checks.h"

namespace quantcore::bindings {
namespace {

kernels::GpuFloat gpu_float(at::ScalarType t) {
  return t == at::kHalf ? kernels::GpuFloat::kF16 : t == at::kBFloat16 ? kernels::GpuFloat::kBF16
                                                                        : kernels::GpuFloat::kF32;
}

kernels::QatFakeQuantCudaArgs kernel_args(const QatArgs& p) {
  kernels::QatFakeQuantCudaArgs a;
  a.x = p.x.data_ptr();
  a.dtype = gpu_float(p.x.scalar_type());
  a.scale = p.scale.data_ptr<float>();
  a.zero = p.zero.defined() ? p.zero.data_ptr<float>() : nullptr;
  a.row_per_row = p.grid.row_per_row;
  a.rows = p.rows;
  a.cols = p.cols;
  a.group = p.grid.group;
  a.bits = p.grid.bits;
  a.snap = p.grid.snap;
  a.scale_type = p.grid.scale_type == kernels::ScaleType::kF16    ? kernels::GpuFloat::kF16
                 : p.grid.scale_type == kernels::ScaleType::kBF16 ? kernels::GpuFloat::kBF16
                                                                  : kernels::GpuFloat::kF32;
  a.grad_factor = p.grid.grad_factor;
  return a;
}

void check_launch(int code, const char* op) {
  TORCH_CHECK(code == 0, op, ": CUDA kernel launch failed: ", kernels::cuda_error_string(code));
}

at::Tensor qat_fake_quantize_cuda(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
                                  int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype,
                                  double grad_factor) {
  constexpr const char* op = "quantcore.qat_fake_quantize";
  const c10::cuda::CUDAGuard guard(x.device());
  const QatArgs p = prepare_qat_args(x, scale, zero, bits, group_size, grid_dtype, grad_factor, op,
                                     /*check_values=*/false,
                                     /*x_as_float=*/false);
  at::Tensor y = at::empty({p.rows, p.cols}, p.x.options());
  kernels::QatFakeQuantCudaArgs a = kernel_args(p);
  a.y = y.data_ptr();
  check_launch(kernels::qat_fake_quant_cuda(a, at::cuda::getCurrentCUDAStream().stream()), op);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qat_fake_quantize_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
    int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype, double grad_factor) {
  constexpr const char* op = "quantcore.qat_fake_quantize_backward";
  const c10::cuda::CUDAGuard guard(x.device());
  const QatArgs p = prepare_qat_args(x, scale, zero, bits, group_size, grid_dtype, grad_factor, op,
                                     /*check_values=*/false,
                                     /*x_as_float=*/false);
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes() && grad.device() == x.device(), op,
                    ": grad must have the shape and device of x");
  const at::Tensor g = grad.to(p.x.scalar_type()).contiguous();
  const int64_t groups = p.cols / group_size;
  const auto f32 = p.scale.options();
  at::Tensor grad_x = at::empty({p.rows, p.cols}, p.x.options());
  at::Tensor gs = at::empty({p.rows, groups}, f32);
  at::Tensor gz = zero ? at::empty({p.rows, groups}, f32) : at::zeros({p.rows, groups}, f32);
  kernels::QatFakeQuantCudaArgs a = kernel_args(p);
  a.grad_y = g.data_ptr();
  a.grad_x = grad_x.data_ptr();
  a.grad_scale = gs.data_ptr<float>();
  a.grad_zero = zero ? gz.data_ptr<float>() : nullptr;
  check_launch(kernels::qat_fake_quant_backward_cuda(a, at::cuda::getCurrentCUDAStream().stream()), op);
  if (!p.grid.row_per_row) {
    gs = gs.sum(0, /*keepdim=*/true);
    gz = gz.sum(0, /*keepdim=*/true);
  }
  return {grad_x, gs, gz};
}

at::Tensor fake_quantize_per_token_cuda(const at::Tensor& x, int64_t bits, bool symmetric) {
  constexpr const char* op = "quantcore.fake_quantize_per_token";
  const c10::cuda::CUDAGuard guard(x.device());
  const PerTokenArgs p = prepare_per_token_args(x, bits, op);
  at::Tensor y = at::empty_like(p.x);
  kernels::ActFakeQuantCudaArgs a;
  a.x = p.x.data_ptr();
  a.y = y.data_ptr();
  a.rows = p.rows;
  a.cols = p.cols;
  a.bits = int(bits);
  a.symmetric = symmetric;
  a.dtype = gpu_float(p.x.scalar_type());
  check_launch(kernels::fake_quant_per_token_cuda(a, at::cuda::getCurrentCUDAStream().stream()), op);
  return y.view(x.sizes());
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CUDA, m) {
  m.impl("fake_quantize_per_token", &fake_quantize_per_token_cuda);
  m.impl("qat_fake_quantize", &qat_fake_quantize_cuda);
  m.impl("qat_fake_quantize_backward", &qat_fake_quantize_backward_cuda);
}

}  // namespace quantcore::bindings
