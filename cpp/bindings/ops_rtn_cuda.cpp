// CUDA implementation of quantcore::rtn_quantize (kernel in
// cpp/kernels/cuda/rtn_cuda.cu). Per-tensor grids (group_size 0) are one
// group over the whole matrix: those run on the CPU kernel and come back.
// Built only with QUANTCORE_ENABLE_CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

#include "finite.h"
#include "cuda/gptq_block_cuda.h"
#include "cuda/rtn_cuda.h"
#include "rtn_checks.h"

namespace quantcore::bindings {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> rtn_quantize_cuda(
    const at::Tensor& weight, int64_t bits, int64_t group_size, bool symmetric, bool mse_clip,
    int64_t clip_grid, double clip_max_shrink, at::ScalarType scale_dtype) {
  constexpr const char* op = "quantcore.rtn_quantize";
  const c10::cuda::CUDAGuard guard(weight.device());
  check_rtn_args(weight, bits, group_size, mse_clip, clip_grid, clip_max_shrink, scale_dtype, op);
  if (group_size == 0) {
    static auto cpu_op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("quantcore::rtn_quantize", "")
                             .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                 const at::Tensor&, int64_t, int64_t, bool, bool, int64_t, double, at::ScalarType)>();
    auto [codes, scales, zeros] =
        cpu_op.call(weight.cpu(), bits, group_size, symmetric, mse_clip, clip_grid, clip_max_shrink, scale_dtype);
    return {codes.to(weight.device()), scales.to(weight.device()), zeros.to(weight.device())};
  }
  at::Tensor w = weight.to(at::kFloat).contiguous();
  TORCH_CHECK_VALUE(algorithms::all_finite(w), op, ": weight contains NaN or Inf");
  const int64_t rows = w.size(0), cols = w.size(1), gs = group_size > 0 ? group_size : cols;
  at::Tensor codes = at::empty({rows, cols}, w.options().dtype(at::kByte));
  at::Tensor scales = at::empty({rows, cols / gs}, w.options());
  at::Tensor zeros = at::empty({rows, cols / gs}, w.options().dtype(at::kByte));
  at::Tensor status = at::zeros({1}, w.options().dtype(at::kInt));
  kernels::RtnCudaArgs a;
  a.w = w.data_ptr<float>();
  a.codes = codes.data_ptr<uint8_t>();
  a.scales = scales.data_ptr<float>();
  a.zeros = zeros.data_ptr<uint8_t>();
  a.status = status.data_ptr<int>();
  a.rows = rows;
  a.cols = cols;
  a.group_size = gs;
  a.bits = int(bits);
  a.symmetric = symmetric;
  a.mse_clip = mse_clip;
  a.clip_grid = int(clip_grid);
  a.clip_max_shrink = float(clip_max_shrink);
  a.scale = scale_dtype == at::kHalf ? kernels::GpuFloat::kF16
            : scale_dtype == at::kBFloat16 ? kernels::GpuFloat::kBF16 : kernels::GpuFloat::kF32;
  const int code = kernels::rtn_quantize_cuda(a, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(code == 0, op, ": CUDA kernel launch failed: ", kernels::cuda_error_string(code));
  TORCH_CHECK_VALUE(status.item<int>() == 0, op,
                    ": a group's scale overflows the scale dtype (float16 tops out at 65504); "
                    "use float32 or bfloat16 scales for weights this large");
  return {codes, scales.to(scale_dtype), zeros};
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CUDA, m) { m.impl("rtn_quantize", &rtn_quantize_cuda); }

}  // namespace quantcore::bindings
