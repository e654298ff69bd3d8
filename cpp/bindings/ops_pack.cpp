// CPU implementations of quantcore::pack and quantcore::unpack.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "pack.h"
#include "tensor_checks.h"

namespace quantcore::bindings {
namespace {

at::Tensor pack_cpu(const at::Tensor& codes, int64_t bits, int64_t word_bits) {
  constexpr const char* op = "quantcore.pack";
  check_cpu(codes, op, "codes");
  TORCH_CHECK_TYPE(codes.scalar_type() == at::kByte || codes.scalar_type() == at::kChar, op,
                   ": codes must be torch.uint8 (unsigned) or torch.int8 (signed), got ",
                   dtype_name(codes.scalar_type()));
  check_contiguous(codes, op, "codes");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(word_bits == 8 || word_bits == 32, op, ": word_bits must be 8 or 32");
  TORCH_CHECK_VALUE(codes.dim() >= 1 && codes.numel() > 0, op, ": codes must be a non-empty tensor");
  const int64_t cols = codes.size(-1);
  TORCH_CHECK_VALUE(kernels::pack_shape_ok(cols, int(bits), int(word_bits)), op, ": the last dim (",
                    cols, ") times bits (", bits, ") must be a multiple of ", word_bits,
                    " so every row fills whole words");
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
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte || packed.scalar_type() == at::kInt, op,
                   ": packed must be torch.uint8 or torch.int32 words, got ",
                   dtype_name(packed.scalar_type()));
  check_contiguous(packed, op, "packed");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(packed.dim() >= 1 && packed.numel() > 0, op,
                    ": packed must be a non-empty tensor");
  const int word_bits = packed.scalar_type() == at::kByte ? 8 : 32;
  const int64_t row_bits = packed.size(-1) * word_bits;
  TORCH_CHECK_VALUE(row_bits % bits == 0, op, ": a row of ", packed.size(-1), " ", word_bits,
                    "-bit words does not hold a whole number of ", bits, "-bit codes");
  const int64_t cols = row_bits / bits;
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
