// GPTQ (Frantar et al. 2022): column-by-column quantization of a weight matrix
// with the rounding error propagated to the not-yet-quantized columns through
// the inverse Hessian of the layer's inputs. Factorization, grids and the
// between-block GEMMs are ATen, so the same code runs on CPU and CUDA tensors;
// the sequential in-block loop runs on the torch-free kernel of
// cpp/kernels/gptq_block.h for CPU tensors and as ATen column operations on
// other devices. It follows the reference implementation (IST-DASLab/gptq,
// gptq.py) step for step, so codes match it exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace quantcore::algorithms {

struct GptqOptions {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per output row
  bool symmetric = true;
  bool act_order = false;     // columns in order of decreasing Hessian diagonal
  bool static_groups = false; // group grids from the unpermuted weight, before any update
  double percdamp = 0.01;     // damping: percdamp * mean(diag H)
  int64_t block_size = 128;   // lazy-batch block width
  bool mse_clip = false;      // MSE shrink search for each group grid
  at::ScalarType scale_dtype = at::kHalf;
};

struct GptqResult {
  at::Tensor codes;   // uint8 [rows, cols], original column order
  at::Tensor scales;  // [rows, groups] in scale_dtype
  at::Tensor zeros;   // uint8 [rows, groups]
  at::Tensor g_idx;   // int32 [cols]: group of each original column
  double damp_used = 0;      // percdamp that made H positive definite
  std::string fallback;      // "" | "diagonal floor" | "rtn" (H unusable)
  double loss = 0;           // sum of (w - q)^2 / d^2, the GPTQ objective
};

// weight [rows, cols] float; hessian [cols, cols] float32 (2/n X^T X). Inputs
// are not modified. Throws c10::ValueError for NaN/Inf or bad shapes.
GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const GptqOptions& opt);

// hessian <- hessian * n / (n + m) + 2 / (n + m) * x^T x for x [m, cols] (fp32
// accumulation); returns n + m. Streaming form: no activations are kept.
int64_t gptq_hessian_update(at::Tensor& hessian, const at::Tensor& x, int64_t samples_seen);

}  // namespace quantcore::algorithms
