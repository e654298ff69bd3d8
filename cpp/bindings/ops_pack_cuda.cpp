// CUDA implementations of quantcore::pack and quantcore::unpack (kernels in
// cpp/kernels/cuda/pack_cuda.cu). Built only with QUANTCORE_ENABLE_CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/gptq_block_cuda.h"
#include "cuda/pack_cuda.h"
#include "pack_checks.h"

namespace quantcore::bindings {
namespace {

void check_cuda_launch(int code, const char* op) {
  TORCH_CHECK(code == 0, op, ": CUDA kernel launch failed: ", kernels::cuda_error_string(code));
}

at::Tensor pack_cuda(const at::Tensor& codes, int64_t bits, int64_t word_bits) {
  constexpr const char* op = "quantcore.pack";
  const c10::cuda::CUDAGuard guard(codes.device());
  const int64_t cols = check_pack_args(codes, bits, word_bits, op);
  const bool is_signed = codes.scalar_type() == at::kChar;
  // Range check on the device; one flag comes back (a sync, as on the CPU path's error).
  const at::Tensor wide = codes.to(at::kShort);
  const int64_t lo = is_signed ? -(int64_t(1) << (bits - 1)) : 0;
  const int64_t hi = is_signed ? (int64_t(1) << (bits - 1)) - 1 : (int64_t(1) << bits) - 1;
  const at::Tensor bad = (wide < lo).logical_or_(wide > hi);
  if (bad.any().item<bool>()) {
    const int64_t at_index = bad.flatten().nonzero().index({0, 0}).item<int64_t>();
    TORCH_CHECK_VALUE(false, op, ": code at flat index ", at_index, " (value ",
                      wide.flatten()[at_index].item<int64_t>(), ") does not fit in ", bits,
                      (is_signed ? " signed" : " unsigned"), " bits");
  }
  auto sizes = codes.sizes().vec();
  sizes.back() = kernels::packed_words(cols, int(bits), int(word_bits));
  at::Tensor out = at::empty(sizes, codes.options().dtype(word_bits == 8 ? at::kByte : at::kInt));
  check_cuda_launch(kernels::pack_cuda(static_cast<const uint8_t*>(codes.data_ptr()), codes.numel() / cols, cols,
                                       int(bits), static_cast<uint8_t*>(out.data_ptr()),
                                       at::cuda::getCurrentCUDAStream().stream()),
                    op);
  return out;
}

at::Tensor unpack_cuda(const at::Tensor& packed, int64_t bits, bool is_signed) {
  constexpr const char* op = "quantcore.unpack";
  const c10::cuda::CUDAGuard guard(packed.device());
  const int64_t cols = check_unpack_args(packed, bits, op);
  auto sizes = packed.sizes().vec();
  sizes.back() = cols;
  at::Tensor out = at::empty(sizes, packed.options().dtype(is_signed ? at::kChar : at::kByte));
  check_cuda_launch(kernels::unpack_cuda(static_cast<const uint8_t*>(packed.data_ptr()),
                                         packed.numel() / packed.size(-1), cols, int(bits), is_signed,
                                         static_cast<uint8_t*>(out.data_ptr()),
                                         at::cuda::getCurrentCUDAStream().stream()),
                    op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CUDA, m) {
  m.impl("pack", &pack_cuda);
  m.impl("unpack", &unpack_cuda);
}

}  // namespace quantcore::bindings
