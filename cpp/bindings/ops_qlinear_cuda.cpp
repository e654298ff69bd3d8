// CUDA implementations of quantcore::qlinear and quantcore::dequantize_packed:
// argument checks around cpp/kernels/cuda/ (GEMV for small batches; dequantize
// then cuBLAS for larger ones). Built only with QUANTCORE_ENABLE_CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cuda/dequant_cuda.h"
#include "cuda/gptq_block_cuda.h"
#include "cuda/qgemm_tc_cuda.h"
#include "cuda/qgemv_cuda.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

// Above this batch the weights are dequantized once and multiplied by cuBLAS.
constexpr int64_t kGemvMaxM = 8;

kernels::GpuFloat gpu_float(at::ScalarType t) {
  return t == at::kHalf ? kernels::GpuFloat::kF16 : t == at::kBFloat16 ? kernels::GpuFloat::kBF16
                                                                        : kernels::GpuFloat::kF32;
}

void check_launch(int code, const char* op) {
  TORCH_CHECK(code == 0, op, ": CUDA kernel launch failed: ", kernels::cuda_error_string(code));
}

struct Packed {
  int64_t N, K, groups;
};

Packed check_packed(const at::Tensor& qweight, const at::Tensor& scales, const std::optional<at::Tensor>& zeros,
                    int64_t bits, int64_t group_size, const char* op) {
  TORCH_CHECK_VALUE(qweight.is_cuda() && scales.is_cuda(), op, ": qweight and scales must be CUDA tensors");
  TORCH_CHECK_VALUE(qweight.device() == scales.device(), op, ": qweight and scales must be on one device");
  check_dtype(qweight, at::kInt, op, "qweight");
  check_float(scales, op, "scales");
  check_contiguous(qweight, op, "qweight");
  check_contiguous(scales, op, "scales");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(qweight.dim() == 2 && scales.dim() == 2, op, ": qweight and scales must be 2-D");
  const int64_t N = qweight.size(0), K = qweight.size(1) * 32 / bits;
  TORCH_CHECK_VALUE(qweight.size(1) * 32 % bits == 0, op, ": qweight width does not hold whole codes");
  // -1 is per channel, as on the CPU: one group of K.
  TORCH_CHECK_VALUE((group_size > 0 && K % group_size == 0) || group_size == -1, op, ": group_size ", group_size,
                    " must divide K=", K, " (or be -1 for per channel)");
  const int64_t groups = group_size == -1 ? 1 : K / group_size;
  TORCH_CHECK_VALUE(scales.size(0) == N && scales.size(1) == groups, op, ": scales must be [", N, ", ", groups,
                    "], got ", scales.sizes());
  if (zeros) {
    check_dtype(*zeros, at::kByte, op, "zeros");
    check_contiguous(*zeros, op, "zeros");
    TORCH_CHECK_VALUE(zeros->device() == qweight.device(), op, ": zeros must be on the weight's device");
    TORCH_CHECK_VALUE(zeros->sizes() == scales.sizes(), op, ": zeros must have the shape of scales");
  }
  return {N, K, groups};
}

at::Tensor dequantize(const at::Tensor& qweight, const at::Tensor& scales, const std::optional<at::Tensor>& zeros,
                      int64_t bits, int64_t group_size, at::ScalarType out_type, const Packed& p, const char* op) {
  at::Tensor out = at::empty({p.N, p.K}, qweight.options().dtype(out_type));
  kernels::DequantArgs a;
  a.qweight = qweight.data_ptr<int32_t>();
  a.scales = scales.data_ptr();
  a.zeros = zeros ? zeros->data_ptr<uint8_t>() : nullptr;
  a.out = out.data_ptr();
  a.N = p.N;
  a.K = p.K;
  a.bits = int(bits);
  a.group_size = group_size;
  a.scale = gpu_float(scales.scalar_type());
  a.out_type = gpu_float(out_type);
  check_launch(kernels::dequant_cuda(a, at::cuda::getCurrentCUDAStream().stream()), op);
  return out;
}

at::Tensor qlinear_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                        const std::optional<at::Tensor>& zeros, const std::optional<at::Tensor>& bias, int64_t bits,
                        int64_t group_size) {
  constexpr const char* op = "quantcore.qlinear";
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK_VALUE(x.is_cuda() && x.device() == qweight.device(), op, ": x must be on the weight's CUDA device");
  check_float(x, op, "x");
  check_contiguous(x, op, "x");
  TORCH_CHECK_VALUE(bits == 4 || bits == 8, op, ": bits must be 4 or 8, got ", bits);
  const Packed p = check_packed(qweight, scales, zeros, bits, group_size, op);
  group_size = p.K / p.groups;
  TORCH_CHECK_VALUE(group_size % (32 / bits) == 0, op, ": group_size must be a multiple of ", 32 / bits);
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == p.K, op, ": x must be [..., ", p.K, "], got ", x.sizes());
  // x [..., K] runs as [M, K]. 2-D x (QuantLinear's call) takes no extra tensor
  // ops: at M = 1 the host's time per call is close to the GEMV's.
  const bool flat = x.dim() == 2;
  const at::Tensor x2 = flat ? x : x.reshape({-1, p.K});  // a view: x is contiguous
  const auto shaped = [&](const at::Tensor& y) {
    if (flat) return y;
    std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end() - 1);  // x's leading dims, then N
    sizes.push_back(p.N);
    return y.view(sizes);
  };
  if (bias) {
    check_float(*bias, op, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == p.N && bias->device() == x.device(), op,
                      ": bias must be [", p.N, "] on x's device");
  }
  const int64_t M = x2.size(0);
  const bool half_act = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  if (half_act && M <= kGemvMaxM && kernels::qgemv_supported(int(bits), p.K, group_size)) {
    at::Tensor y = at::empty({M, p.N}, x.options());
    at::Tensor b = bias ? bias->to(x.scalar_type()).contiguous() : at::Tensor();
    kernels::QGemvArgs a;
    a.x = x2.data_ptr();
    a.qweight = qweight.data_ptr<int32_t>();
    a.scales = scales.data_ptr();
    a.zeros = zeros ? zeros->data_ptr<uint8_t>() : nullptr;
    a.bias = b.defined() ? b.data_ptr() : nullptr;
    a.y = y.data_ptr();
    a.M = M;
    a.N = p.N;
    a.K = p.K;
    a.bits = int(bits);
    a.group_size = group_size;
    a.act = gpu_float(x.scalar_type());
    a.scale = gpu_float(scales.scalar_type());
    if (M > 0) check_launch(kernels::qgemv_cuda(a, at::cuda::getCurrentCUDAStream().stream()), op);
    return shaped(y);
  }
  at::Tensor w = dequantize(qweight, scales, zeros, bits, group_size, x.scalar_type(), p, op);
  return shaped(bias ? at::linear(x2, w, bias->to(x.scalar_type())) : at::linear(x2, w));
}

at::Tensor dequantize_packed_cuda(const at::Tensor& qweight, const at::Tensor& scales,
                                  const std::optional<at::Tensor>& zeros, int64_t bits, int64_t group_size,
                                  at::ScalarType dtype) {
  constexpr const char* op = "quantcore.dequantize_packed";
  const c10::cuda::CUDAGuard guard(qweight.device());
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
                   ": dtype must be float32, float16 or bfloat16");
  TORCH_CHECK_VALUE(bits == 2 || bits == 4 || bits == 8, op, ": bits must be 2, 4 or 8, got ", bits);
  const Packed p = check_packed(qweight, scales, zeros, bits, group_size, op);
  group_size = p.K / p.groups;
  TORCH_CHECK_VALUE(group_size % (32 / bits) == 0, op, ": group_size must be a multiple of ", 32 / bits);
  return dequantize(qweight, scales, zeros, bits, group_size, dtype, p, op);
}

// Split-K arrival counters. The kernels leave them zero after every launch,
// so one zeroed buffer per (device, stream) serves every call without a
// memset kernel each time; launches on one stream never overlap. While the
// stream is being captured into a CUDA graph, a buffer made now would only be
// zeroed when the graph replays, so a capture without one gets its own
// zeroed counters (a memset node in the graph).
at::Tensor split_k_counters(const at::Tensor& like, int64_t n) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TORCH_CHECK(cudaStreamIsCapturing(stream, &capture) == cudaSuccess, "cudaStreamIsCapturing failed");
  static std::mutex mutex;
  // Never destroyed: no tensor outlives torch's allocator at exit.
  static auto* buffers = new std::map<std::pair<int, cudaStream_t>, at::Tensor>();
  const std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& buf = (*buffers)[{int(like.get_device()), stream}];
  if (buf.defined() && buf.numel() >= n) return buf;
  at::Tensor fresh = at::zeros({n < 4096 ? 4096 : n}, like.options().dtype(at::kInt));
  if (capture == cudaStreamCaptureStatusNone) buf = fresh;
  return fresh;
}

at::Tensor qgemm_tc_cuda(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                         const std::optional<at::Tensor>& zeros, const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "quantcore.qgemm_tc";
  TORCH_CHECK_VALUE(x.is_cuda() && codes.device() == x.device() && scales.device() == x.device(), op,
                    ": x, codes and scales must be on one CUDA device");
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16, op,
                   ": x must be float16 or bfloat16, got ", x.scalar_type());
  check_dtype(codes, at::kInt, op, "codes");
  check_float(scales, op, "scales");
  check_contiguous(codes, op, "codes");
  check_contiguous(scales, op, "scales");
  TORCH_CHECK_VALUE(codes.dim() == 2 && codes.size(1) % 4 == 0, op, ": codes must be [N/32, 4K], got ",
                    codes.sizes());
  const int64_t N = codes.size(0) * 32, K = codes.size(1) / 4;
  TORCH_CHECK_VALUE(scales.dim() == 2 && scales.size(0) > 0 && scales.size(1) == N, op, ": scales must be [groups, ",
                    N, "], got ", scales.sizes());
  const int64_t groups = scales.size(0);
  TORCH_CHECK_VALUE(K % groups == 0, op, ": ", groups, " groups do not divide K=", K);
  const int64_t group_size = K / groups;
  TORCH_CHECK_VALUE(kernels::qgemm_tc_supported(N, K, group_size), op, ": unsupported sizes N=", N, " K=", K,
                    " group_size=", group_size, " (K must be a multiple of 64, the group a multiple of 32)");
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == K, op, ": x must be [M, ", K, "], got ", x.sizes());
  if (zeros) {
    check_dtype(*zeros, at::kByte, op, "zeros");
    check_contiguous(*zeros, op, "zeros");
    TORCH_CHECK_VALUE(zeros->sizes() == scales.sizes() && zeros->device() == x.device(), op,
                      ": zeros must have the shape and device of scales");
  }
  at::Tensor b;
  if (bias) {
    check_float(*bias, op, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N && bias->device() == x.device(), op,
                      ": bias must be [", N, "] on x's device");
    b = bias->to(x.scalar_type()).contiguous();
  }
  // cp.async reads x in 16-byte pieces.
  at::Tensor xc = x.is_contiguous() && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 ? x : x.contiguous().clone();
  const int64_t M = x.size(0);
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0) return y;
  kernels::QGemmTcArgs a;
  a.x = xc.data_ptr();
  a.codes = codes.data_ptr<int32_t>();
  a.scales = scales.data_ptr();
  a.zeros = zeros ? zeros->data_ptr<uint8_t>() : nullptr;
  a.bias = b.defined() ? b.data_ptr() : nullptr;
  a.y = y.data_ptr();
  a.M = M;
  a.N = N;
  a.K = K;
  a.group_size = group_size;
  a.act = gpu_float(x.scalar_type());
  a.scale = gpu_float(scales.scalar_type());
  // Tuning knob for benchmarks: QUANTCORE_TC_SPLITS=s forces the split-K factor.
  if (const char* forced = std::getenv("QUANTCORE_TC_SPLITS")) {
    const int s = std::atoi(forced);
    TORCH_CHECK_VALUE(s >= 1 && s <= 16 && s <= K / 64, op, ": QUANTCORE_TC_SPLITS must be in [1, min(16, K/64)]");
    a.splits = s;
  }
  // QUANTCORE_WGMMA=0 / 1: never / wherever possible take the Hopper wgmma GEMM (default: where it is faster).
  if (const char* wg = std::getenv("QUANTCORE_WGMMA")) {
    TORCH_CHECK_VALUE(std::string(wg) == "0" || std::string(wg) == "1", op, ": QUANTCORE_WGMMA must be 0 or 1");
    a.wgmma = wg[0] - '0';
  }
  // QUANTCORE_WG_CLUSTER=1 / 0: the wgmma GEMM adds its split-K partial sums in a thread-block
  // cluster's shared memory / through a global workspace (default: the one its planner prefers).
  if (const char* cl = std::getenv("QUANTCORE_WG_CLUSTER")) {
    TORCH_CHECK_VALUE(std::string(cl) == "0" || std::string(cl) == "1", op,
                      ": QUANTCORE_WG_CLUSTER must be 0 or 1");
    a.cluster_sum = cl[0] - '0';
  }
  kernels::qgemm_tc_plan(a);
  at::Tensor workspace, counters;
  if (const int64_t w = kernels::qgemm_tc_workspace(a); w > 0) {
    workspace = at::empty({w}, x.options().dtype(at::kFloat));
    counters = split_k_counters(x, kernels::qgemm_tc_counters(a));
    a.workspace = workspace.data_ptr<float>();
    a.counters = counters.data_ptr<int32_t>();
  }
  check_launch(kernels::qgemm_tc_cuda(a, at::cuda::getCurrentCUDAStream().stream()), op);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CUDA, m) {
  m.impl("qgemm_tc", &qgemm_tc_cuda);
  m.impl("qlinear", &qlinear_cuda);
  m.impl("dequantize_packed", &dequantize_packed_cuda);
}

}  // namespace quantcore::bindings
