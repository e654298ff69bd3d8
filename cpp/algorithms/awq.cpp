#include "awq.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>
#include <vector>

#include "fake_quant.h"
#include "status.h"

namespace quantcore::algorithms {

namespace {

kernels::ScaleType kernel_scale_type(at::ScalarType t) {
  return t == at::kHalf ? kernels::ScaleType::kF16 : t == at::kBFloat16 ? kernels::ScaleType::kBF16
                                                                        : kernels::ScaleType::kF32;
}

int64_t group_width(const AwqGrid& grid, int64_t cols) { return grid.group_size > 0 ? grid.group_size : cols; }

at::Tensor fake_quantize_cpu(const at::Tensor& W, const at::Tensor& col_scale, const at::Tensor& clip,
                             const AwqGrid& grid) {
  const int64_t rows = W.size(0), cols = W.size(1);
  kernels::RtnParams p;
  p.bits = grid.spec.bits;
  p.symmetric = grid.spec.symmetric;
  p.group_size = group_width(grid, cols);
  p.scale_type = kernel_scale_type(grid.spec.scale_dtype);
  at::Tensor s = col_scale.defined() ? col_scale.contiguous() : at::Tensor();
  at::Tensor m = clip.defined() ? clip.contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(W);
  try {
    kernels::rtn_validate(p, cols);
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / cols), [&](int64_t r0, int64_t r1) {
      kernels::fake_quantize_rows(W.data_ptr<float>(), cols, p, s.defined() ? s.data_ptr<float>() : nullptr,
                                  m.defined() ? m.data_ptr<float>() : nullptr, out.data_ptr<float>(), r0, r1);
    });
  } catch (const kernels::KernelError& e) {
    TORCH_CHECK_VALUE(false, "awq: ", e.what());
  }
  return out;
}

// The same computation as ATen ops, for tensors on other devices.
at::Tensor fake_quantize_aten(const at::Tensor& W, const at::Tensor& col_scale, const at::Tensor& clip,
                              const AwqGrid& grid) {
  const int64_t rows = W.size(0), cols = W.size(1), gs = group_width(grid, cols);
  at::Tensor v = col_scale.defined() ? W * col_scale : W;
  v = v.view({rows, cols / gs, gs});
  if (clip.defined()) {
    at::Tensor m = clip.unsqueeze(-1);
    v = at::maximum(at::minimum(v, m), -m);
  }
  Grid g = make_grid(std::get<0>(v.min(-1)), std::get<0>(v.max(-1)), grid.spec);
  at::Tensor out = ((quantize_codes(v, g, grid.spec.bits) - g.zero) * g.scale).view({rows, cols});
  return col_scale.defined() ? out / col_scale : out;
}

// Blocks H[g*gs:(g+1)*gs, g*gs:(g+1)*gs] stacked into [groups, gs, gs].
at::Tensor diagonal_blocks(const at::Tensor& H, int64_t gs) {
  const int64_t groups = H.size(0) / gs;
  std::vector<at::Tensor> blocks;
  blocks.reserve(size_t(groups));
  for (int64_t g = 0; g < groups; ++g) blocks.push_back(H.narrow(0, g * gs, gs).narrow(1, g * gs, gs));
  return at::stack(blocks);
}

}  // namespace

at::Tensor fake_quantize_groups(const at::Tensor& weight, const at::Tensor& col_scale, const at::Tensor& clip,
                                const AwqGrid& grid) {
  at::Tensor W = weight.to(at::kFloat).contiguous();
  return W.is_cpu() ? fake_quantize_cpu(W, col_scale, clip, grid) : fake_quantize_aten(W, col_scale, clip, grid);
}

double output_error(const at::Tensor& diff, const at::Tensor& hessian) {
  return at::mul(at::mm(diff, hessian), diff).sum(at::kDouble).item<double>();
}

AwqScaleResult awq_search_scale(const at::Tensor& weight, const at::Tensor& hessian, const at::Tensor& x_mean,
                                const at::Tensor& prev_absmax, const AwqScaleOptions& opt) {
  at::Tensor W = weight.to(at::kFloat).contiguous();
  const int64_t rows = W.size(0), cols = W.size(1), gs = group_width(opt.grid, cols);
  // Statistics in float32, held away from zero so that no power of them is 0 or inf.
  at::Tensor xm = x_mean.to(W.device(), at::kFloat).clamp_min(1e-8);
  at::Tensor wm;
  if (opt.duo_scaling) {
    at::Tensor a = W.abs().view({rows, cols / gs, gs});
    wm = (a / (std::get<0>(a.max(-1, true)) + 1e-6)).view({rows, cols}).mean(0);
  }
  at::Tensor col_absmax = std::get<0>(W.abs().max(0));
  at::Tensor prev = prev_absmax.defined() ? prev_absmax.to(W.device(), at::kFloat) : at::Tensor();

  std::vector<double> losses(size_t(opt.n_grid), std::numeric_limits<double>::infinity());
  AwqScaleResult result;
  result.scales = at::ones({cols}, W.options());
  double best = std::numeric_limits<double>::infinity();
  result.best = -1;
  if (opt.duo_scaling) {
    // The duo rule has no alpha that means "no scaling": RTN competes explicitly,
    // so the search never does worse than it on the calibration inputs.
    best = output_error(fake_quantize_groups(W, at::Tensor(), at::Tensor(), opt.grid) - W, hessian);
  }
  for (int64_t i = 0; i < opt.n_grid; ++i) {
    const double alpha = double(i) / double(opt.n_grid);
    at::Tensor s = opt.duo_scaling ? (xm.pow(alpha) / (wm.pow(1.0 - alpha) + 1e-4)).clamp_min(1e-4)
                                   : xm.pow(alpha).clamp_min(1e-4);
    // Normalised so the largest and smallest scale are reciprocal (AWQ's rule).
    s = s / (s.max() * s.min()).sqrt();
    // One synchronisation per candidate: the checks and the loss come back together.
    at::Tensor finite = at::isfinite(s).all();
    at::Tensor fits = finite;
    if (opt.max_abs > 0) {
      fits = fits.logical_and((col_absmax * s).max() <= opt.max_abs);
      if (prev.defined()) fits = fits.logical_and((prev / s).max() <= opt.max_abs);
    }
    if (!fits.item<bool>()) continue;
    at::Tensor D = fake_quantize_groups(W, s, at::Tensor(), opt.grid) - W;
    const double loss = output_error(D, hessian);
    losses[size_t(i)] = loss;
    if (std::isfinite(loss) && loss < best) {
      best = loss;
      result.best = i;
      result.scales = s;
    }
  }
  result.losses = at::tensor(losses, at::TensorOptions().dtype(at::kDouble));
  return result;
}

at::Tensor awq_search_clip(const at::Tensor& weight, const at::Tensor& hessian, const AwqGrid& grid,
                           int64_t n_grid, double max_shrink) {
  at::Tensor W = weight.to(at::kFloat).contiguous();
  const int64_t rows = W.size(0), cols = W.size(1), gs = group_width(grid, cols), groups = cols / gs;
  at::Tensor Hb = diagonal_blocks(hessian, gs);  // [groups, gs, gs]
  // Error of each (row, group) from its own columns: dg^T Hgg dg, batched over groups.
  auto group_errors = [&](const at::Tensor& D) {
    at::Tensor Dg = D.view({rows, groups, gs}).transpose(0, 1);  // [groups, rows, gs]
    return at::mul(at::bmm(Dg, Hb), Dg).sum(-1).transpose(0, 1);  // [rows, groups]
  };
  at::Tensor org_max = std::get<0>(W.abs().view({rows, groups, gs}).max(-1));
  at::Tensor best_clip = org_max.clone();
  at::Tensor best_err = group_errors(fake_quantize_groups(W, at::Tensor(), at::Tensor(), grid) - W);
  const int64_t steps = int64_t(max_shrink * double(n_grid) + 1e-9);
  for (int64_t i = 1; i < steps; ++i) {
    at::Tensor clip = org_max * (1.0 - double(i) / double(n_grid));
    at::Tensor err = group_errors(fake_quantize_groups(W, at::Tensor(), clip, grid) - W);
    at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best_clip = at::where(better, clip, best_clip);
  }
  return best_clip.contiguous();
}

}  // namespace quantcore::algorithms
