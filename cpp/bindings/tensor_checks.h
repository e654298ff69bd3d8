// Argument checks shared by the op implementations. Each failure raises the
// Python exception a user expects: TypeError for a wrong dtype, ValueError for
// wrong shapes, devices, layouts or values.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <functional>
#include <string>

#include "float_convert.h"
#include "qgemm.h"
#include "status.h"

namespace quantcore::bindings {

// dtype names as Python users write them (c10 would print "Int", "Long").
inline std::string dtype_name(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return "torch.float32";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kDouble: return "torch.float64";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    default: return c10::toString(s);
  }
}

inline void check_cpu(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
}

inline void check_contiguous(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name,
                    " must be contiguous (call .contiguous() first)");
}

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
                   " must be float32, float16 or bfloat16, got ", dtype_name(s));
}

inline void check_dtype(const at::Tensor& t, at::ScalarType want, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == want, op, ": ", name, " must be ", dtype_name(want), ", got ",
                   dtype_name(t.scalar_type()));
}

inline void check_bits(int64_t bits, int64_t lo, int64_t hi, const char* op) {
  TORCH_CHECK_VALUE(bits >= lo && bits <= hi, op, ": bits must be in [", lo, ", ", hi, "], got ",
                    bits);
}

inline kernels::DType kernel_dtype(at::ScalarType s) {
  switch (s) {
    case at::kHalf: return kernels::DType::kF16;
    case at::kBFloat16: return kernels::DType::kBF16;
    default: return kernels::DType::kF32;
  }
}

inline kernels::ScaleType scale_type(at::ScalarType s, const char* op) {
  switch (s) {
    case at::kFloat: return kernels::ScaleType::kF32;
    case at::kHalf: return kernels::ScaleType::kF16;
    case at::kBFloat16: return kernels::ScaleType::kBF16;
    default: TORCH_CHECK_TYPE(false, op, ": scale_dtype must be float32, float16 or bfloat16, got ", dtype_name(s));
  }
}

// Runs kernel code, turning its KernelError into a Python ValueError.
inline void run_kernel(const char* op, const std::function<void()>& body) {
  try {
    body();
  } catch (const kernels::KernelError& e) {
    TORCH_CHECK_VALUE(false, op, ": ", e.what());
  }
}

}  // namespace quantcore::bindings
