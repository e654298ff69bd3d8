#include "gptq.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

namespace quantcore::algorithms {

using at::indexing::Slice;

namespace {

// Grid of one group of columns for every row: the RTN rules of cpp/kernels/rtn.h
// (symmetric s = 2 max|w| / maxq with z = 2^(bits-1); asymmetric over
// [min(w,0), max(w,0)]), scales rounded to their storage dtype.
struct Grid {
  at::Tensor scale;  // [rows, 1] float32
  at::Tensor zero;   // [rows, 1] float32 (integral values)
};

Grid make_grid(const at::Tensor& lo_in, const at::Tensor& hi_in, const GptqOptions& opt) {
  const double maxq = double((1 << opt.bits) - 1);
  at::Tensor scale, zero, lo = lo_in, hi = hi_in;
  if (opt.symmetric) {
    at::Tensor amax = at::maximum(lo.abs(), hi.abs());
    scale = at::where(amax > 0, amax * 2 / maxq, at::ones_like(amax));
  } else {
    lo = lo.clamp_max(0);
    hi = hi.clamp_min(0);
    scale = at::where(hi > lo, (hi - lo) / maxq, at::ones_like(hi));
  }
  scale = scale.to(opt.scale_dtype).to(at::kFloat);
  TORCH_CHECK_VALUE(at::isfinite(scale).all().item<bool>(),
                    "gptq: a group's scale overflows the scale dtype; use float32 or bfloat16 scales");
  const double tiny = opt.scale_dtype == at::kHalf ? 5.9604645e-08 : 1e-38;
  scale = at::where(scale > 0, scale, at::full_like(scale, tiny));
  if (opt.symmetric)
    zero = at::full_like(scale, double((1 << opt.bits) / 2));
  else
    zero = at::round(-lo / scale).clamp(0, maxq);
  return {scale.unsqueeze(1), zero.unsqueeze(1)};
}

at::Tensor quantize(const at::Tensor& w, const Grid& g, double maxq) {
  return at::clamp(at::round(w / g.scale) + g.zero, 0, maxq);
}

Grid find_grid(const at::Tensor& w, const GptqOptions& opt) {
  const double maxq = double((1 << opt.bits) - 1);
  at::Tensor lo = std::get<0>(w.min(1)), hi = std::get<0>(w.max(1));
  Grid best = make_grid(lo, hi, opt);
  if (!opt.mse_clip) return best;
  auto error = [&](const Grid& g) { return ((quantize(w, g, maxq) - g.zero) * g.scale - w).pow(2).sum(1); };
  at::Tensor best_err = error(best);
  for (int i = 1; i <= 80; ++i) {  // the RTN clip grid: ratios 1 - i/100 down to 0.2
    const double ratio = 1.0 - i / 100.0;
    Grid cand = make_grid(lo * ratio, hi * ratio, opt);
    at::Tensor err = error(cand);
    at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best.scale = at::where(better.unsqueeze(1), cand.scale, best.scale);
    best.zero = at::where(better.unsqueeze(1), cand.zero, best.zero);
  }
  return best;
}

// Upper Cholesky factor of H^-1, as the reference computes it. Returns an
// undefined tensor when H + damping is not positive definite.
at::Tensor inverse_factor(const at::Tensor& h, double damp) {
  at::Tensor hd = h.clone();
  hd.diagonal().add_(damp);
  auto [l, info] = at::linalg_cholesky_ex(hd);
  if (info.item<int>() != 0) return {};
  at::Tensor inv = at::cholesky_inverse(l);
  auto [u, info2] = at::linalg_cholesky_ex(inv, /*upper=*/true);
  if (info2.item<int>() != 0 || !at::isfinite(u).all().item<bool>()) return {};
  return u;
}

}  // namespace

int64_t gptq_hessian_update(at::Tensor& hessian, const at::Tensor& x, int64_t samples_seen) {
  const int64_t cols = hessian.size(0);
  TORCH_CHECK_VALUE(x.size(-1) == cols, "gptq: inputs have ", x.size(-1), " features, H is ", cols);
  at::Tensor x2 = x.reshape({-1, cols}).to(at::kFloat);
  TORCH_CHECK_VALUE(at::isfinite(x2).all().item<bool>(), "gptq: calibration inputs contain NaN or Inf");
  const int64_t m = x2.size(0);
  if (m == 0) return samples_seen;
  const int64_t total = samples_seen + m;
  hessian.mul_(double(samples_seen) / double(total));
  // 2/n X^T X = (sqrt(2/n) X)^T (sqrt(2/n) X), as the reference scales it.
  at::Tensor xs = x2 * std::sqrt(2.0 / double(total));
  hessian.addmm_(xs.t(), xs);
  return total;
}

GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const GptqOptions& opt) {
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const double maxq = double((1 << opt.bits) - 1);
  const int64_t gs = opt.group_size == -1 ? cols : opt.group_size;
  at::Tensor W = weight.to(at::kFloat).clone();
  at::Tensor H = hessian.to(at::kFloat).clone();
  TORCH_CHECK_VALUE(at::isfinite(W).all().item<bool>(), "gptq: weight contains NaN or Inf");
  TORCH_CHECK_VALUE(at::isfinite(H).all().item<bool>(), "gptq: Hessian contains NaN or Inf");

  // Dead inputs (never active in calibration): H_ii = 1, W[:, i] = 0.
  at::Tensor dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({Slice(), dead}, 0.0);

  std::vector<Grid> static_grids;
  if (opt.static_groups && opt.group_size != -1)
    for (int64_t g0 = 0; g0 < cols; g0 += gs) static_grids.push_back(find_grid(W.index({Slice(), Slice(g0, g0 + gs)}), opt));

  at::Tensor perm, invperm;
  if (opt.act_order) {
    perm = at::argsort(H.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true);
    W = W.index({Slice(), perm});
    H = H.index({perm}).index({Slice(), perm});
    invperm = at::argsort(perm);
  }

  GptqResult res;
  const double mean_diag = H.diagonal().mean().item<double>();
  at::Tensor Hinv;
  for (double pd = opt.percdamp; pd <= opt.percdamp + 0.1 + 1e-12 && !Hinv.defined(); pd += 0.01) {
    Hinv = inverse_factor(H, pd * mean_diag);
    res.damp_used = pd;
  }
  if (!Hinv.defined()) {
    // Floor the diagonal at the mean and damp once more: a valid (if weaker)
    // curvature model; failing that, plain RTN (Hinv = I) as the last resort.
    at::Tensor Hf = H.clone();
    Hf.diagonal().clamp_min_(mean_diag > 0 ? mean_diag : 1.0);
    Hinv = inverse_factor(Hf, 0.1 * (mean_diag > 0 ? mean_diag : 1.0));
    res.fallback = Hinv.defined() ? "diagonal floor" : "rtn";
    if (!Hinv.defined()) Hinv = at::eye(cols, W.options());
  }

  at::Tensor Q = at::zeros_like(W);  // integer codes (as float) in permuted order
  const int64_t groups = cols / gs;
  at::Tensor scales = at::empty({rows, groups}, W.options());
  at::Tensor zeros = at::empty({rows, groups}, W.options());
  Grid grid;
  if (opt.group_size == -1) {
    grid = find_grid(W, opt);
    scales.index_put_({Slice(), 0}, grid.scale.squeeze(1));
    zeros.index_put_({Slice(), 0}, grid.zero.squeeze(1));
  }
  double loss = 0;
  for (int64_t i1 = 0; i1 < cols; i1 += opt.block_size) {
    const int64_t i2 = std::min(i1 + opt.block_size, cols), count = i2 - i1;
    at::Tensor W1 = W.index({Slice(), Slice(i1, i2)}).clone();
    at::Tensor Err1 = at::zeros_like(W1);
    at::Tensor Hinv1 = Hinv.index({Slice(i1, i2), Slice(i1, i2)});
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      at::Tensor w = W1.index({Slice(), i});
      const double d = Hinv1.index({i, i}).item<double>();
      if (opt.group_size != -1) {
        if (opt.static_groups) {
          const int64_t orig = opt.act_order ? perm.index({col}).item<int64_t>() : col;
          grid = static_grids[size_t(orig / gs)];
        } else if (col % gs == 0) {
          // As the reference: the group's grid from W with all earlier blocks'
          // updates applied (this block's in-block updates are in W1).
          grid = find_grid(W.index({Slice(), Slice(col, col + gs)}), opt);
          scales.index_put_({Slice(), col / gs}, grid.scale.squeeze(1));
          zeros.index_put_({Slice(), col / gs}, grid.zero.squeeze(1));
        }
      }
      at::Tensor q = quantize(w.unsqueeze(1), grid, maxq).squeeze(1);
      Q.index_put_({Slice(), col}, q);
      at::Tensor dq = (q - grid.zero.squeeze(1)) * grid.scale.squeeze(1);
      at::Tensor err = (w - dq) / d;
      loss += (err * err).sum().item<double>();
      W1.index({Slice(), Slice(i)}).sub_(at::matmul(err.unsqueeze(1), Hinv1.index({i, Slice(i)}).unsqueeze(0)));
      Err1.index_put_({Slice(), i}, err);
    }
    if (i2 < cols) W.index({Slice(), Slice(i2)}).sub_(at::matmul(Err1, Hinv.index({Slice(i1, i2), Slice(i2)})));
  }

  at::Tensor g_idx = at::arange(cols, W.options().dtype(at::kLong)).div(gs, "floor");
  if (opt.static_groups && opt.group_size != -1) {
    for (size_t g = 0; g < static_grids.size(); ++g) {
      scales.index_put_({Slice(), int64_t(g)}, static_grids[g].scale.squeeze(1));
      zeros.index_put_({Slice(), int64_t(g)}, static_grids[g].zero.squeeze(1));
    }
    // Groups are defined on original columns: g_idx stays i // gs.
  } else if (opt.act_order) {
    g_idx = g_idx.index({invperm});  // original column j sat at position invperm[j]
  }
  if (opt.act_order) Q = Q.index({Slice(), invperm});
  res.codes = Q.to(at::kByte);
  res.scales = scales.to(opt.scale_dtype);
  res.zeros = zeros.to(at::kByte);
  res.g_idx = g_idx.to(at::kInt);
  res.loss = loss;
  return res;
}

}  // namespace quantcore::algorithms
