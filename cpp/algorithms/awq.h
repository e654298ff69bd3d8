// AWQ (Lin et al. 2023): activation-aware scaling of input channels before
// group-wise quantization, and a per-group clip search. Both searches score a
// candidate by the output error it causes on the calibration inputs,
//   tr(D H D^T),  D = fake_quant(W) - W,  H = 2/n X^T X,
// so the layer's activations never need to be kept: H is the same streamed
// statistic GPTQ uses. Written with ATen (the fake quantization runs on the
// torch-free kernel of cpp/kernels/fake_quant.h for CPU tensors), so the same
// code runs on CPU and CUDA tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "group_grid.h"

namespace quantcore::algorithms {

struct AwqGrid {
  GridSpec spec;
  int64_t group_size = 128;  // -1: one group per row
};

// dequant(quant(clamp(W * s, -clip, clip))) / s, group-wise. col_scale [cols]
// and clip [rows, groups] may be undefined. weight float32 [rows, cols].
at::Tensor fake_quantize_groups(const at::Tensor& weight, const at::Tensor& col_scale, const at::Tensor& clip,
                                const AwqGrid& grid);

// tr(D H D^T) for D [rows, cols], H [cols, cols]: the squared output error summed
// over the calibration tokens' (weighted) rows.
double output_error(const at::Tensor& diff, const at::Tensor& hessian);

struct AwqScaleOptions {
  AwqGrid grid;
  int64_t n_grid = 20;       // alpha = i / n_grid, i = 0 .. n_grid - 1
  bool duo_scaling = false;  // s = x_mean^a / w_mean^(1-a) (AutoAWQ's variant)
  double max_abs = 0;        // > 0: skip scales that push |W s| or |prev / s| past it
};

struct AwqScaleResult {
  at::Tensor scales;  // float32 [cols]; ones when alpha = 0 wins
  at::Tensor losses;  // float64 [n_grid] on the CPU; +inf for skipped candidates
  int64_t best = -1;  // index of the winning alpha; -1: no scaling (duo_scaling's RTN candidate)
};

// weight [rows, cols] (the concatenated linears that share one input), hessian
// [cols, cols], x_mean [cols] = mean |x| per input channel, prev_absmax [cols]
// (max |value| the scale divides in the op before, or undefined).
AwqScaleResult awq_search_scale(const at::Tensor& weight, const at::Tensor& hessian, const at::Tensor& x_mean,
                                const at::Tensor& prev_absmax, const AwqScaleOptions& opt);

// Per-group clip thresholds [rows, groups] (float32): for ratios 1 - i / n_grid,
// i < max_shrink * n_grid, the one whose group output error dg^T Hgg dg is the
// smallest (ratio 1, no clipping, always competes).
at::Tensor awq_search_clip(const at::Tensor& weight, const at::Tensor& hessian, const AwqGrid& grid,
                           int64_t n_grid, double max_shrink);

}  // namespace quantcore::algorithms
