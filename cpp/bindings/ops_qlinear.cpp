// CPU implementation of quantcore::qlinear: argument checks, then the two
// kernel phases (activation preparation, output columns) on ATen's thread pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "cpu_features.h"
#include "dequant.h"
#include "qgemm.h"
#include "qlinear_dispatch.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

// From this many rows of fp32/fp16 activations on, the fp32 GEMM of ATen (MKL)
// on dequantized panels of W matches or beats the fused kernels, which must
// split such activations into 2-3 bf16 terms (Zen 4, 2 threads: at M = 32 a tie
// on 4096 x 4096, 5% ahead on 1536 x 576; at M = 128 1.4-1.6x ahead; see
// benchmarks/RESULTS.md). bf16 activations always stay on the fused kernels.
constexpr int64_t kDequantMmMinM = 32;
// Rows of W dequantized at a time: about 4 MiB of fp32, never the whole weight.
constexpr int64_t kPanelBytes = 4 << 20;

std::atomic<int> g_dequant_mm{-1};  // -1 auto, 0 never, 1 whenever allowed

bool use_dequant_mm(bool bf16_activations, int64_t M) {
  if (bf16_activations) return false;  // the bf16 kernels win there
  const int mode = g_dequant_mm.load();
  return mode == 1 || (mode == -1 && M >= kDequantMmMinM);
}

// y = x @ dequant(W)^T (+ bias) through at::mm on panels of dequantized rows.
void qlinear_dequant_mm(const at::Tensor& x, const kernels::QGemmProblem& p, const at::Tensor& bias_f32,
                        at::Tensor& y) {
  const int64_t M = p.M, N = p.N, K = p.K;
  at::Tensor xf = x.reshape({M, K}).to(at::kFloat).contiguous();
  at::Tensor yf = at::empty({M, N}, x.options().dtype(at::kFloat));
  const int64_t chunk = std::max<int64_t>(16, std::min<int64_t>(N, kPanelBytes / (4 * K)) / 16 * 16);
  at::Tensor panel = at::empty({chunk, K}, xf.options());
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nb = std::min(chunk, N - n0);
    float* dst = panel.data_ptr<float>();
    at::parallel_for(0, nb, 8, [&](int64_t b, int64_t e) {
      kernels::dequantize_rows(p, dst + b * K, K, n0 + b, n0 + e);
    });
    yf.narrow(1, n0, nb).copy_(at::mm(xf, panel.narrow(0, 0, nb).t()));
  }
  if (bias_f32.defined()) yf.add_(bias_f32);
  y.view({M, N}).copy_(yf);
}

at::Tensor qlinear_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                       const std::optional<at::Tensor>& zeros, const std::optional<at::Tensor>& bias,
                       int64_t bits, int64_t group_size) {
  constexpr const char* op = "quantcore.qlinear";
  TORCH_CHECK_VALUE(bits == 4 || bits == 8, op, ": the CPU kernels support bits 4 and 8, got ", bits);
  check_cpu(x, op, "x");
  check_cpu(qweight, op, "qweight");
  check_cpu(scales, op, "scales");
  check_float(x, op, "x");
  check_dtype(qweight, at::kInt, op, "qweight");
  check_float(scales, op, "scales");
  check_contiguous(x, op, "x");
  check_contiguous(qweight, op, "qweight");
  TORCH_CHECK_VALUE(qweight.dim() == 2 && qweight.numel() > 0, op,
                    ": qweight must be a non-empty 2-D int32 tensor [N, K*bits/32]");
  const int64_t N = qweight.size(0);
  const int64_t K = qweight.size(1) * 32 / bits;
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == K, op, ": x has ", x.size(-1),
                    " input features but the packed weight holds ", K);
  const int64_t gs = group_size == -1 ? K : group_size;
  TORCH_CHECK_VALUE(gs > 0 && K % gs == 0, op, ": group_size ", group_size,
                    " must divide K = ", K, " (or be -1 for per channel)");
  const int64_t G = K / gs;
  TORCH_CHECK_VALUE(scales.dim() == 2 && scales.size(0) == N && scales.size(1) == G, op,
                    ": scales must be [", N, ", ", G, "], got ", scales.sizes());
  at::Tensor scales_f32 = scales.to(at::kFloat).contiguous();
  at::Tensor zeros_u8;
  if (zeros.has_value()) {
    check_cpu(*zeros, op, "zeros");
    check_dtype(*zeros, at::kByte, op, "zeros");
    TORCH_CHECK_VALUE(zeros->dim() == 2 && zeros->size(0) == N && zeros->size(1) == G, op,
                      ": zeros must be [", N, ", ", G, "], got ", zeros->sizes());
    zeros_u8 = zeros->contiguous();
  }
  at::Tensor bias_f32;
  if (bias.has_value()) {
    check_cpu(*bias, op, "bias");
    check_float(*bias, op, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, op, ": bias must have shape [", N,
                      "], got ", bias->sizes());
    bias_f32 = bias->to(at::kFloat).contiguous();
  }

  auto out_sizes = x.sizes().vec();
  out_sizes.back() = N;
  at::Tensor y = at::empty(out_sizes, x.options());
  const int64_t M = x.numel() / K;
  if (M == 0) return y;

  kernels::QGemmProblem p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.bits = int(bits);
  p.group_size = gs;
  p.qweight = static_cast<const uint8_t*>(qweight.data_ptr());
  p.scales = scales_f32.data_ptr<float>();
  p.zeros = zeros_u8.defined() ? zeros_u8.data_ptr<uint8_t>() : nullptr;
  p.bias = bias_f32.defined() ? bias_f32.data_ptr<float>() : nullptr;
  const kernels::Isa isa = kernels::active_isa();
  const kernels::DType xt = kernel_dtype(x.scalar_type());

  run_kernel(op, [&] {
    kernels::qgemm_validate(p);
    if (use_dequant_mm(x.scalar_type() == at::kBFloat16, M)) {
      qlinear_dequant_mm(x, p, bias_f32, y);
      return;
    }
    const kernels::QGemmPath path = kernels::qgemm_choose_path(p, isa, xt);
    at::Tensor ws = at::empty({int64_t(kernels::qgemm_workspace_bytes(p, path))},
                              x.options().dtype(at::kByte));
    void* wsp = ws.data_ptr();
    at::parallel_for(0, M, std::max<int64_t>(1, 16384 / K), [&](int64_t b, int64_t e) {
      kernels::qgemm_prepare(p, path, x.data_ptr(), xt, wsp, b, e);
    });
    const int64_t block = kernels::qgemm_column_block(path);
    at::parallel_for(0, (N + block - 1) / block, 1, [&](int64_t b, int64_t e) {
      kernels::qgemm_compute(p, isa, path, wsp, y.data_ptr(), xt, b * block, std::min(N, e * block));
    });
  });
  return y;
}

}  // namespace

void force_qlinear_path(const std::string& name) {
  if (name == "dequant_mm") {
    g_dequant_mm.store(1);
    kernels::qgemm_force_path("auto");
    return;
  }
  kernels::qgemm_force_path(name);  // validates the name
  g_dequant_mm.store(name.empty() || name == "auto" ? -1 : 0);
}

bool qlinear_uses_dequant_mm(const std::string& x_dtype, int64_t M) {
  return use_dequant_mm(x_dtype == "bfloat16", M);
}

TORCH_LIBRARY_IMPL(quantcore, CPU, m) { m.impl("qlinear", &qlinear_cpu); }

}  // namespace quantcore::bindings
