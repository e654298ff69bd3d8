// Argument checks of quantcore::pack / unpack shared by the CPU and CUDA
// implementations (the device check is each implementation's own).
#pragma once

#include <ATen/ATen.h>

#include "pack.h"
#include "tensor_checks.h"

namespace quantcore::bindings {

// Checks codes / bits / word_bits; returns the codes per row.
inline int64_t check_pack_args(const at::Tensor& codes, int64_t bits, int64_t word_bits, const char* op) {
  TORCH_CHECK_TYPE(codes.scalar_type() == at::kByte || codes.scalar_type() == at::kChar, op,
                   ": codes must be torch.uint8 (unsigned) or torch.int8 (signed), got ",
                   dtype_name(codes.scalar_type()));
  check_contiguous(codes, op, "codes");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(word_bits == 8 || word_bits == 32, op, ": word_bits must be 8 or 32");
  TORCH_CHECK_VALUE(codes.dim() >= 1 && codes.numel() > 0, op, ": codes must be a non-empty tensor");
  const int64_t cols = codes.size(-1);
  TORCH_CHECK_VALUE(kernels::pack_shape_ok(cols, int(bits), int(word_bits)), op, ": the last dim (", cols,
                    ") times bits (", bits, ") must be a multiple of ", word_bits, " so every row fills whole words");
  return cols;
}

// Checks packed / bits; returns the codes per row.
inline int64_t check_unpack_args(const at::Tensor& packed, int64_t bits, const char* op) {
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte || packed.scalar_type() == at::kInt, op,
                   ": packed must be torch.uint8 or torch.int32 words, got ", dtype_name(packed.scalar_type()));
  check_contiguous(packed, op, "packed");
  check_bits(bits, 2, 8, op);
  TORCH_CHECK_VALUE(packed.dim() >= 1 && packed.numel() > 0, op, ": packed must be a non-empty tensor");
  const int word_bits = packed.scalar_type() == at::kByte ? 8 : 32;
  const int64_t row_bits = packed.size(-1) * word_bits;
  TORCH_CHECK_VALUE(row_bits % bits == 0, op, ": a row of ", packed.size(-1), " ", word_bits,
                    "-bit words does not hold a whole number of ", bits, "-bit codes");
  return row_bits / bits;
}

}  // namespace quantcore::bindings
