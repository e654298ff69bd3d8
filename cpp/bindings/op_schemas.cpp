// The operator schemas of torch.ops.quantcore, declared once. Backends register
// implementations in ops_*.cpp; fake (meta) implementations live in
// python/quantcore/_fake_ops.py so torch.compile can trace through them.
#include <torch/library.h>

TORCH_LIBRARY(quantcore, m) {
  // Packs int8/uint8 codes (last dim) into uint8 (word_bits=8) or int32 words.
  m.def("pack(Tensor codes, int bits, int word_bits) -> Tensor");
  // Inverse of pack; returns int8 when signed else uint8.
  m.def("unpack(Tensor packed, int bits, bool signed) -> Tensor");
  // Round-to-nearest quantization of a 2-D weight. group_size: >0 group,
  // -1 per row (channel), 0 per tensor. Returns (codes uint8, scales, zeros uint8).
  m.def(
      "rtn_quantize(Tensor weight, int bits, int group_size, bool symmetric, bool mse_clip, "
      "int clip_grid, float clip_max_shrink, ScalarType scale_dtype) -> (Tensor, Tensor, Tensor)");
  // GPTQ of a 2-D weight given H = 2/n X^T X. Returns (codes uint8, scales,
  // zeros uint8, g_idx int32, info float64 [damp used, fallback 0/1/2, loss]).
  m.def(
      "gptq_quantize(Tensor weight, Tensor hessian, int bits, int group_size, bool symmetric, "
      "bool act_order, bool static_groups, float percdamp, int block_size, bool mse_clip, "
      "ScalarType scale_dtype) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The factor GPTQ propagates errors with: upper U with (H + damp I)^-1 = U^T U,
  // computed in one n x n buffer (blocked, in place). Raises when H + damp I is
  // not positive definite.
  m.def("gptq_inverse_factor(Tensor hessian, float damp, int block_size=256) -> Tensor");
  // ggml block types (GGUF): rows of x [rows, n] to uint8 [rows, bytes per row],
  // optionally weighted by llama.cpp's importance vector (mean x^2 per column);
  // and back to float32 [rows, n].
  m.def("gguf_quantize(Tensor x, int ggml_type, Tensor? importance=None) -> Tensor");
  m.def("gguf_dequantize(Tensor data, int ggml_type, int n) -> Tensor");
  // Streams a batch of layer inputs into H (running mean of 2 x^T x); returns the new count.
  m.def("gptq_hessian_update(Tensor(a!) hessian, Tensor x, int samples_seen) -> int");
  // Group-wise quantize-dequantize of a 2-D weight, optionally of W * col_scale
  // (result divided back) and with values clamped to +-clip[row, group].
  m.def(
      "fake_quantize_groups(Tensor weight, Tensor? col_scale, Tensor? clip, int bits, int group_size, "
      "bool symmetric, ScalarType scale_dtype) -> Tensor");
  // AWQ's per-input-channel scale search over alpha = i / n_grid. Returns
  // (scales float32 [cols], losses float64 [n_grid], +inf where skipped).
  m.def(
      "awq_search_scale(Tensor weight, Tensor hessian, Tensor x_mean, Tensor? prev_absmax, int bits, "
      "int group_size, bool symmetric, int n_grid, bool duo_scaling, float max_abs, ScalarType scale_dtype) "
      "-> (Tensor, Tensor)");
  // AWQ's clip search: per (row, group) clip threshold, float32 [rows, groups].
  m.def(
      "awq_search_clip(Tensor weight, Tensor hessian, int bits, int group_size, bool symmetric, int n_grid, "
      "float max_shrink, ScalarType scale_dtype) -> Tensor");
  // Float weight [N, K] of packed int32 codes (CUDA; 2/4/8 bits).
  m.def(
      "dequantize_packed(Tensor qweight, Tensor scales, Tensor? zeros, int bits, int group_size, "
      "ScalarType dtype) -> Tensor");
  // y = x @ dequant(W)^T + bias for packed int32 weights [N, K*bits/32].
  m.def(
      "qlinear(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, Tensor? bias, int bits, "
      "int group_size) -> Tensor");
  // y = x @ dequant(W)^T + bias for 4-bit weights in the tensor-core layout
  // (codes int32 [N/32, 4K], scales [K/group, N], zeros uint8 likewise;
  // cpp/kernels/cuda/qgemm_tc_cuda.h). CUDA only.
  m.def("qgemm_tc(Tensor x, Tensor codes, Tensor scales, Tensor? zeros, Tensor? bias) -> Tensor");
  // QAT: y = (clamp(round(x / s) + z, 0, 2^bits - 1) - z) * s per group of columns;
  // scale/zero [rows or 1, cols / group_size], zero None = 2^(bits - 1).
  // grid_dtype set: scale/zero are learnable parameters, snapped first (scales
  // rounded to grid_dtype and floored at fp16's smallest normal, zeros rounded
  // and clamped), straight through; grad_factor scales their gradients (LSQ).
  // Autograd (straight-through, LSQ) in ops_qat_autograd.cpp.
  m.def(
      "qat_fake_quantize(Tensor x, Tensor scale, Tensor? zero, int bits, int group_size, "
      "ScalarType? grid_dtype=None, float grad_factor=1.0) -> Tensor");
  // Returns (grad_x, grad_scale fp32, grad_zero fp32), the scale/zero grads summed per group.
  m.def(
      "qat_fake_quantize_backward(Tensor grad, Tensor x, Tensor scale, Tensor? zero, int bits, int group_size, "
      "ScalarType? grid_dtype=None, float grad_factor=1.0) -> (Tensor, Tensor, Tensor)");
  // Dynamic per-token fake quantization of activations x [..., cols]: each row
  // quantized with RTN's min/max grid of its own values (fp32 scale) and
  // dequantized; rows with NaN/Inf come back NaN. Backward: straight through.
  m.def("fake_quantize_per_token(Tensor x, int bits, bool symmetric) -> Tensor");
}
