// CPU implementations of quantcore::pack and quantcore::unpack.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "pack.h"
#include "pack_checks.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

at::Tensor pack_cpu(const at::Tensor& codes, int64_t bits, int64_t word_bits) {
  constexpr const char* op = "quantcore.pack";
  check_cpu(codes, op, "codes");
  const int64_t cols = check_pack_args(codes, bits, word_bits, op);
  const bool is_signed = codes.scalar_type() == at::kChar;
  const uint8_t* src = static_cast<const uint8_t*>(codes.data_ptr());
  const int64_t bad = kernels::find_out_of_range(src, codes.numel(), is_signed, int(bits));
  TORCH_CHECK_VALUE(bad < 0, op, ": code at flat index ", bad, " (value ",
                    is_signed ? int(int8_t(src[bad >= 0 ? bad : 0])) : int(src[bad >= 0 ? bad : 0]),
                    ") does not fit in ", bits, (is_signed ? " signed" : " unsigned"), " bits");
  auto sizes = codes.sizes().vec();
  sizes.back() = kernels::packed_words(cols, int(bits), int(word_bits));
  at::Tensor out = at::empty(sizes, codes.options().dtype(word_bits == 8 ? at::kByte : at::kInt));
  const int64_t rows = codes.numel() / cols;
  at::parallel_for(0, rows, 256, [&](int64_t b, int64_t e) {
    kernels::pack_rows(src, cols, int(bits), int(word_bits), out.data_ptr(), b, e);
  });
  return out;
}

at::Tensor unpack_cpu(const at::Tensor& packed, int64_t bits, bool is_signed) {
  constexpr const char* op = "quantcore.unpack";
  check_cpu(packed, op, "packed");
  const int64_t cols = check_unpack_args(packed, bits, op);
  const int word_bits = packed.scalar_type() == at::kByte ? 8 : 32;
  auto sizes = packed.sizes().vec();
  sizes.back() = cols;
  at::Tensor out = at::empty(sizes, packed.options().dtype(is_signed ? at::kChar : at::kByte));
  const int64_t rows = packed.numel() / packed.size(-1);
  at::parallel_for(0, rows, 256, [&](int64_t b, int64_t e) {
    kernels::unpack_rows(packed.data_ptr(), cols, int(bits), word_bits, is_signed,
                         static_cast<uint8_t*>(out.data_ptr()), b, e);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, CPU, m) {
  m.impl("pack", &pack_cpu);
  m.impl("unpack", &unpack_cpu);
}

}  // namespace quantcore::bindings
