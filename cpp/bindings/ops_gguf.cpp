// quantcore::gguf_quantize and quantcore::gguf_dequantize: ggml block types
// (cpp/kernels/gguf) on CPU tensors, rows in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>

#include "finite.h"
#include "gguf/ggml_dequantize.h"
#include "gguf/ggml_quantize.h"
#include "gguf/ggml_types.h"
#include "status.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

using kernels::gguf::TypeSize;

TypeSize checked_type(int64_t ggml_type, const char* op, bool quantized_only) {
  const TypeSize ts = ggml_type >= 0 && ggml_type < (1LL << 32) ? kernels::gguf::type_size(uint32_t(ggml_type))
                                                                 : TypeSize{0, 0};
  TORCH_CHECK_VALUE(ts.block_elems > 0 && (!quantized_only || ts.block_elems > 1), op, ": ggml type ", ggml_type,
                    " is not one of the supported types (Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q2_K=10, "
                    "Q3_K=11, Q4_K=12, Q5_K=13, Q6_K=14",
                    quantized_only ? ")" : ", F32=0, F16=1, BF16=30)");
  return ts;
}

template <typename Fn>
void each_row(int64_t rows, int64_t row_cost, Fn fn) {
  try {
    at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, row_cost)), fn);
  } catch (const kernels::KernelError& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

at::Tensor gguf_quantize_cpu(const at::Tensor& x, int64_t ggml_type, const std::optional<at::Tensor>& importance) {
  constexpr const char* op = "quantcore.gguf_quantize";
  check_cpu(x, op, "x");
  check_float(x, op, "x");
  const TypeSize ts = checked_type(ggml_type, op, true);
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be 2-D [rows, n], got ", x.sizes());
  const int64_t rows = x.size(0), n = x.size(1);
  TORCH_CHECK_VALUE(n > 0 && n % ts.block_elems == 0, op, ": row length ", n, " is not a multiple of ",
                    ts.block_elems, ", the block size of ggml type ", ggml_type);
  TORCH_CHECK_VALUE(algorithms::all_finite(x), op, ": x contains NaN or Inf");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  at::Tensor imp;
  if (importance.has_value()) {
    imp = *importance;
    check_cpu(imp, op, "importance");
    check_float(imp, op, "importance");
    TORCH_CHECK_VALUE(imp.dim() == 1 && imp.size(0) == n, op, ": importance must be 1-D of length ", n,
                      " (one value per input column), got ", imp.sizes());
    imp = imp.to(at::kFloat).contiguous();
    TORCH_CHECK_VALUE(algorithms::all_finite(imp) && (imp.numel() == 0 || imp.min().item<float>() >= 0), op,
                      ": importance must be finite and non-negative");
  }
  const int64_t row_bytes = n / ts.block_elems * ts.block_bytes;
  at::Tensor out = at::empty({rows, row_bytes}, x.options().dtype(at::kByte));
  const float* src = xf.data_ptr<float>();
  const float* w = imp.defined() ? imp.data_ptr<float>() : nullptr;
  uint8_t* dst = out.data_ptr<uint8_t>();
  each_row(rows, n * 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      kernels::gguf::quantize_row(uint32_t(ggml_type), src + r * n, dst + r * row_bytes, n, w);
  });
  return out;
}

at::Tensor gguf_dequantize_cpu(const at::Tensor& data, int64_t ggml_type, int64_t n) {
  constexpr const char* op = "quantcore.gguf_dequantize";
  check_cpu(data, op, "data");
  check_dtype(data, at::kByte, op, "data");
  const TypeSize ts = checked_type(ggml_type, op, false);
  TORCH_CHECK_VALUE(data.dim() == 2, op, ": data must be 2-D uint8 [rows, bytes per row], got ", data.sizes());
  TORCH_CHECK_VALUE(n > 0 && n % ts.block_elems == 0, op, ": row length ", n, " is not a multiple of ",
                    ts.block_elems, ", the block size of ggml type ", ggml_type);
  const int64_t row_bytes = n / ts.block_elems * ts.block_bytes;
  TORCH_CHECK_VALUE(data.size(1) == row_bytes, op, ": rows of ", n, " elements of ggml type ", ggml_type,
                    " take ", row_bytes, " bytes, data has ", data.size(1));
  const at::Tensor src = data.contiguous();
  const int64_t rows = src.size(0);
  at::Tensor out = at::empty({rows, n}, data.options().dtype(at::kFloat));
  const uint8_t* s = src.data_ptr<uint8_t>();
  float* d = out.data_ptr<float>();
  each_row(rows, n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) kernels::gguf::dequantize_row(uint32_t(ggml_type), s + r * row_bytes, d + r * n, n);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CPU, m) {
  m.impl("gguf_quantize", &gguf_quantize_cpu);
  m.impl("gguf_dequantize", &gguf_dequantize_cpu);
}

}  // namespace quantcore::bindings
