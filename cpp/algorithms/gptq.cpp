#include "gptq.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "finite.h"
#include "group_grid.h"
#include "gptq_block.h"
#include "inverse_factor.h"
#include "rtn.h"
#include "status.h"

#ifdef QUANTCORE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "cuda/gptq_block_cuda.h"
#endif

namespace quantcore::algorithms {

using at::indexing::Slice;

constexpr int64_t kPanel = 256;  // panel width of the factorization and of the Hessian's permutations

namespace {

GridSpec grid_spec(const GptqOptions& opt) { return {opt.bits, opt.symmetric, opt.scale_dtype}; }

at::Tensor quantize(const at::Tensor& w, const Grid& g, double maxq) {
  return at::clamp(at::round(w / g.scale) + g.zero, 0, maxq);
}

// ATen grid search (any device): min/max grid, then the RTN clip grid of ratios
// 1 - i/100 down to 0.2 when mse_clip is set.
Grid find_grid_aten(const at::Tensor& w, const GptqOptions& opt) {
  const double maxq = double((1 << opt.bits) - 1);
  at::Tensor lo = std::get<0>(w.min(1)), hi = std::get<0>(w.max(1));
  Grid best = make_grid(lo, hi, grid_spec(opt));
  if (!opt.mse_clip) return best;
  auto error = [&](const Grid& g) { return ((quantize(w, g, maxq) - g.zero) * g.scale - w).pow(2).sum(1); };
  at::Tensor best_err = error(best);
  for (int i = 1; i <= 80; ++i) {
    const double ratio = 1.0 - i / 100.0;
    Grid cand = make_grid(lo * ratio, hi * ratio, grid_spec(opt));
    at::Tensor err = error(cand);
    at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best.scale = at::where(better.unsqueeze(1), cand.scale, best.scale);
    best.zero = at::where(better.unsqueeze(1), cand.zero, best.zero);
  }
  return best;
}

kernels::ScaleType kernel_scale_type(at::ScalarType t) {
  return t == at::kHalf ? kernels::ScaleType::kF16 : t == at::kBFloat16 ? kernels::ScaleType::kBF16
                                                                        : kernels::ScaleType::kF32;
}

// Grid of columns [c0, c0 + n) of every row of W (float32 [rows, cols],
// contiguous), written into column g of scales / zeros (float32 [rows, grids]).
// On the CPU this is RTN's own grid kernel (the same rules and clip grid).
void find_grid(const at::Tensor& W, int64_t c0, int64_t n, const GptqOptions& opt, at::Tensor& scales,
               at::Tensor& zeros, int64_t g) {
  if (!W.is_cpu()) {
    Grid grid = find_grid_aten(W.narrow(1, c0, n), opt);
    scales.select(1, g).copy_(grid.scale.squeeze(1));
    zeros.select(1, g).copy_(grid.zero.squeeze(1));
    return;
  }
  kernels::RtnParams p;
  p.bits = opt.bits;
  p.symmetric = opt.symmetric;
  p.group_size = n;
  p.mse_clip = opt.mse_clip;
  p.scale_type = kernel_scale_type(opt.scale_dtype);
  const int64_t rows = W.size(0), cols = W.size(1), grids = scales.size(1);
  const float* w = W.data_ptr<float>();
  float* s = scales.data_ptr<float>();
  float* z = zeros.data_ptr<float>();
  try {
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int zero = 0;
        kernels::rtn_group_grid(w + r * cols + c0, n, p, s + r * grids + g, &zero);
        z[r * grids + g] = float(zero);
      }
    });
  } catch (const kernels::KernelError& e) {
    TORCH_CHECK_VALUE(false, "gptq: ", e.what());
  }
}

// Points the kernel's block description at columns [i1, i2) of the solver's
// tensors (host or device memory alike); Ublk is U[i1:i2, i1:i2], contiguous.
kernels::GptqBlock describe_block(at::Tensor& W, const at::Tensor& Ublk, const at::Tensor& scales,
                                  const at::Tensor& zeros, const at::Tensor& grid_of, int bits, at::Tensor& Q,
                                  at::Tensor& Err1, int64_t i1, int64_t i2) {
  const int64_t cols = W.size(1);
  kernels::GptqBlock b;
  b.w = W.data_ptr<float>() + i1;
  b.ld_w = cols;
  b.count = i2 - i1;
  b.hinv = Ublk.data_ptr<float>();
  b.ld_h = b.count;
  b.scales = scales.data_ptr<float>();
  b.zeros = zeros.data_ptr<float>();
  b.ld_grid = scales.size(1);
  b.grid_of = grid_of.data_ptr<int32_t>() + i1;
  b.bits = bits;
  b.codes = Q.data_ptr<uint8_t>() + i1;
  b.ld_codes = cols;
  b.err = Err1.data_ptr<float>();
  b.ld_err = b.count;
  return b;
}

#ifdef QUANTCORE_WITH_CUDA
// The block on the CUDA kernel (one warp per row), on torch's current stream.
void quantize_block_cuda(at::Tensor& W, const at::Tensor& Ublk, const at::Tensor& scales, const at::Tensor& zeros,
                         const at::Tensor& grid_of_dev, int bits, at::Tensor& Q, at::Tensor& Err1,
                         at::Tensor& loss, int64_t i1, int64_t i2) {
  const kernels::GptqBlock b = describe_block(W, Ublk, scales, zeros, grid_of_dev, bits, Q, Err1, i1, i2);
  const int rc = kernels::gptq_block_rows_cuda(b, W.size(0), loss.data_ptr<double>(),
                                               at::cuda::getCurrentCUDAStream(W.device().index()).stream());
  TORCH_CHECK(rc == 0, "gptq: CUDA block kernel failed: ", kernels::cuda_error_string(rc));
}
#endif

// One lazy block, columns [i1, i2) of W, on the CPU kernel (rows in parallel).
double quantize_block_cpu(at::Tensor& W, const at::Tensor& Ublk, const at::Tensor& scales,
                          const at::Tensor& zeros, const at::Tensor& grid_of, int bits, at::Tensor& Q,
                          at::Tensor& Err1, int64_t i1, int64_t i2) {
  const int64_t rows = W.size(0);
  const kernels::GptqBlock b = describe_block(W, Ublk, scales, zeros, grid_of, bits, Q, Err1, i1, i2);
  const int64_t grain = std::max<int64_t>(1, 8192 / b.count);
  return at::parallel_reduce(
      0, rows, grain, 0.0,
      [&](int64_t r0, int64_t r1, double acc) { return acc + kernels::gptq_block_rows(b, r0, r1); },
      [](double a, double c) { return a + c; });
}

// The same block with ATen column operations (CUDA and other devices): no host
// synchronisation inside the loop; returns the block's loss as a 0-d tensor.
at::Tensor quantize_block_aten(at::Tensor& W, const at::Tensor& Hinv1, const at::Tensor& scales,
                               const at::Tensor& zeros, const at::Tensor& grid_of, double maxq,
                               at::Tensor& Q, at::Tensor& Err1, int64_t i1, int64_t i2) {
  const int64_t count = i2 - i1;
  at::Tensor W1 = W.narrow(1, i1, count);  // a view: updated in place
  at::Tensor cols_grid = grid_of.narrow(0, i1, count).to(W.device(), at::kLong);
  at::Tensor S = scales.index_select(1, cols_grid), Z = zeros.index_select(1, cols_grid);
  for (int64_t i = 0; i < count; ++i) {
    at::Tensor w = W1.select(1, i), s = S.select(1, i), z = Z.select(1, i);
    at::Tensor q = at::clamp(at::round(w / s) + z, 0, maxq);
    Q.select(1, i1 + i).copy_(q);
    at::Tensor err = (w - (q - z) * s) / Hinv1.select(0, i).select(0, i);
    Err1.select(1, i).copy_(err);
    if (i + 1 < count) W1.narrow(1, i + 1, count - i - 1).sub_(at::outer(err, Hinv1.select(0, i).narrow(0, i + 1, count - i - 1)));
  }
  return Err1.pow(2).sum();
}

}  // namespace

int64_t gptq_hessian_update(at::Tensor& hessian, const at::Tensor& x, int64_t samples_seen) {
  const int64_t cols = hessian.size(0);
  TORCH_CHECK_VALUE(x.size(-1) == cols, "gptq: inputs have ", x.size(-1), " features, H is ", cols);
  at::Tensor x2 = x.reshape({-1, cols}).to(at::kFloat);
  TORCH_CHECK_VALUE(all_finite(x2), "gptq: calibration inputs contain NaN or Inf");
  const int64_t m = x2.size(0);
  if (m == 0) return samples_seen;
  const int64_t total = samples_seen + m;
  hessian.mul_(double(samples_seen) / double(total));
  // 2/n X^T X = (sqrt(2/n) X)^T (sqrt(2/n) X), as the reference scales it.
  at::Tensor xs = x2 * std::sqrt(2.0 / double(total));
  if (cols < 1024) {
    hessian.addmm_(xs.t(), xs);
    return total;
  }
  // H is symmetric: compute block rows of the lower triangle only (4 block
  // rows: 10/16 of the GEMM work), then mirror it into the upper triangle.
  constexpr int64_t kBlocks = 4;
  const int64_t step = (cols + kBlocks - 1) / kBlocks;
  for (int64_t b0 = 0; b0 < cols; b0 += step) {
    const int64_t b1 = std::min(b0 + step, cols);
    hessian.narrow(0, b0, b1 - b0).narrow(1, 0, b1).addmm_(xs.narrow(1, b0, b1 - b0).t(), xs.narrow(1, 0, b1));
  }
  for (int64_t b0 = step; b0 < cols; b0 += step) {
    const int64_t b1 = std::min(b0 + step, cols);
    hessian.narrow(0, 0, b0).narrow(1, b0, b1 - b0).copy_(hessian.narrow(0, b0, b1 - b0).narrow(1, 0, b0).t());
  }
  return total;
}

GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const GptqOptions& opt) {
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const double maxq = double((1 << opt.bits) - 1);
  const int64_t gs = opt.group_size == -1 ? cols : opt.group_size;
  TORCH_CHECK_VALUE(all_finite(hessian), "gptq: Hessian contains NaN or Inf");

  // Dead inputs (never active in calibration): H_ii = 1, W[:, i] = 0.
  const at::Tensor dead = hessian.diagonal() == 0;
  at::Tensor perm, invperm;
  if (opt.act_order) {  // columns by descending curvature (of the dead-fixed H)
    perm = at::argsort(at::where(dead, at::ones_like(hessian.diagonal()), hessian.diagonal()).to(at::kFloat),
                       /*stable=*/true, /*dim=*/0, /*descending=*/true);
    invperm = at::argsort(perm);
  }
  // W in solve order, float32: one copy of the caller's weight.
  at::Tensor W = perm.defined() ? weight.index_select(1, perm) : weight.clone(at::MemoryFormat::Contiguous);
  if (W.scalar_type() != at::kFloat) W = W.to(at::kFloat);
  TORCH_CHECK_VALUE(all_finite(W), "gptq: weight contains NaN or Inf");
  W.index_put_({Slice(), perm.defined() ? dead.index_select(0, perm) : dead}, 0.0);

  // Static groups: every grid from the weight's own column groups, before any update.
  const bool static_groups = opt.static_groups && opt.group_size != -1;
  at::Tensor static_scales, static_zeros;
  if (static_groups) {
    static_scales = at::empty({rows, cols / gs}, W.options());
    static_zeros = at::empty({rows, cols / gs}, W.options());
    for (int64_t g = 0; g < cols / gs; ++g) {
      const at::Tensor group = perm.defined() ? W.index_select(1, invperm.narrow(0, g * gs, gs))
                                              : W.narrow(1, g * gs, gs).contiguous();
      find_grid(group, 0, gs, opt, static_scales, static_zeros, g);
    }
  }

  // The factor is computed in G = J P H P^T J (P the solve order, J the
  // reversal; see inverse_factor.h). On the CPU, where host memory bounds how
  // large a model can be converted, G is the caller's own matrix, permuted in
  // place and given back unchanged, when it can be (contiguous, float32,
  // exactly symmetric: our Hessians are). Otherwise, and on GPUs (where the
  // row-by-row permutation would cost ten times the solve and one more n x n
  // matrix rarely matters), G is a copy gathered in row panels.
  const at::Tensor order_t =
      (perm.defined() ? perm : at::arange(cols, hessian.options().dtype(at::kLong))).flip(0).cpu().contiguous();
  const std::vector<int64_t> order(order_t.data_ptr<int64_t>(), order_t.data_ptr<int64_t>() + cols);
  const bool in_place = hessian.is_cpu() && hessian.scalar_type() == at::kFloat && hessian.is_contiguous() &&
                        hessian.device() == W.device() && exactly_symmetric(hessian, kPanel);
  at::Tensor G;
  if (in_place) {
    G = hessian;  // shares the caller's storage
    permute_symmetric_inplace(G, order, kPanel);
  } else {
    G = at::empty({cols, cols}, W.options());
    const at::Tensor order_dev = order_t.to(hessian.device());
    for (int64_t r = 0; r < cols; r += kPanel) {
      const int64_t nr = std::min(kPanel, cols - r);
      G.narrow(0, r, nr).copy_(hessian.index_select(0, order_dev.narrow(0, r, nr)).index_select(1, order_dev));
    }
  }
  const at::Tensor g_diagonal = G.diagonal().clone();  // the caller's, in G's order
  // Gives the caller's matrix back however this function ends: G's strict upper
  // triangle is never written, so G and then H follow from it and the diagonal.
  struct Restore {
    at::Tensor g, diagonal;
    std::vector<int64_t> inverse;
    ~Restore() {
      if (!g.defined()) return;
      try {
        restore_lower_from_upper(g, diagonal, kPanel);
        permute_symmetric_inplace(g, inverse, kPanel);
      } catch (...) {  // a destructor must not throw; nothing better is left to do
      }
    }
  } restore;
  if (in_place) {
    restore.g = G;
    restore.diagonal = g_diagonal;
    restore.inverse.resize(size_t(cols));
    for (int64_t i = 0; i < cols; ++i) restore.inverse[size_t(order[size_t(i)])] = i;
  }

  // X = L^-1 for G + damp I = L L^T in G's lower triangle; false when G + damp I
  // is not positive definite (the lower triangle is then reset before a retry).
  const at::Tensor solver_diagonal = g_diagonal.masked_fill(dead.index_select(0, order_t.to(dead.device())), 1.0);
  const auto factor = [&](const at::Tensor& diagonal, double damp) {
    restore_lower_from_upper(G, diagonal + damp, kPanel);
    if (!cholesky_lower_inplace(G, kPanel)) return false;
    invert_lower_inplace(G, kPanel);
    return lower_finite(G, kPanel);
  };

  GptqResult res;
  const double mean_diag = solver_diagonal.mean().item<double>();
  bool factored = false;
  for (double pd = opt.percdamp; pd <= opt.percdamp + 0.1 + 1e-12 && !factored; pd += 0.01) {
    factored = factor(solver_diagonal, pd * mean_diag);
    res.damp_used = pd;
  }
  if (!factored) {
    // Floor the diagonal at the mean and damp once more: a valid (if weaker)
    // curvature model; failing that, plain RTN (U = I) as the last resort.
    const double floor = mean_diag > 0 ? mean_diag : 1.0;
    factored = factor(solver_diagonal.clamp_min(floor), 0.1 * floor);
    res.fallback = factored ? "diagonal floor" : "rtn";
    if (!factored) set_lower_identity(G, kPanel);
  }

  // Grids: one per group (per permuted group unless static), or one per row.
  const int64_t groups = cols / gs;
  at::Tensor scales = at::empty({rows, groups}, W.options());
  at::Tensor zeros = at::empty({rows, groups}, W.options());
  // grid_of[position]: the grid of each column in solve order (host memory).
  at::Tensor grid_of = at::arange(cols, at::TensorOptions().dtype(at::kInt)).div(gs, "floor");
  if (static_groups) {
    scales.copy_(static_scales);
    zeros.copy_(static_zeros);
    if (opt.act_order) grid_of = perm.cpu().to(at::kInt).div(gs, "floor");
  } else if (opt.group_size == -1) {
    find_grid(W, 0, cols, opt, scales, zeros, 0);
  }

  at::Tensor Q = at::zeros({rows, cols}, W.options().dtype(at::kByte));  // codes in solve order
  at::Tensor Err1 = at::empty({rows, std::min(opt.block_size, cols)}, W.options());
  const bool on_cpu = W.is_cpu();
#ifdef QUANTCORE_WITH_CUDA
  const bool cuda_kernel = W.is_cuda() && opt.block_size <= kernels::kGptqCudaMaxBlock;
  const at::Tensor grid_of_dev = cuda_kernel ? grid_of.to(W.device()) : grid_of;
#else
  const bool cuda_kernel = false;
#endif
  double loss = 0;
  at::Tensor loss_t = at::zeros({}, W.options().dtype(at::kDouble));
  for (int64_t i1 = 0; i1 < cols; i1 += opt.block_size) {
    const int64_t i2 = std::min(i1 + opt.block_size, cols), count = i2 - i1;
    // As the reference: a group starting in this block takes its grid from W
    // with the earlier blocks' updates only (so all of them can be found now).
    if (!static_groups && opt.group_size != -1)
      for (int64_t c = (i1 + gs - 1) / gs * gs; c < i2; c += gs) find_grid(W, c, gs, opt, scales, zeros, c / gs);
    at::Tensor E = Err1.narrow(1, 0, count);
    if (on_cpu || cuda_kernel) {
      if (count != Err1.size(1)) E = E.contiguous();  // the kernels address E with ld = count
    }
    const at::Tensor Ublk = upper_factor_block(G, i1, count, i1, count);
    if (on_cpu) {
      loss += quantize_block_cpu(W, Ublk, scales, zeros, grid_of, opt.bits, Q, E, i1, i2);
    } else if (cuda_kernel) {
#ifdef QUANTCORE_WITH_CUDA
      quantize_block_cuda(W, Ublk, scales, zeros, grid_of_dev, opt.bits, Q, E, loss_t, i1, i2);
#endif
    } else {
      loss_t += quantize_block_aten(W, Ublk, scales, zeros, grid_of, maxq, Q, E, i1, i2);
    }
    // W[:, i2:] -= E @ U[i1:i2, i2:], accumulated in place.
    if (i2 < cols) W.narrow(1, i2, cols - i2).addmm_(E, upper_factor_block(G, i1, count, i2, cols - i2), 1, -1);
  }
  if (!on_cpu) loss = loss_t.item<double>();

  // Groups are defined on solve positions, except static ones (original columns).
  at::Tensor g_idx = at::arange(cols, W.options().dtype(at::kLong)).div(gs, "floor");
  if (opt.act_order && !static_groups) g_idx = g_idx.index({invperm});  // column j sat at invperm[j]
  if (opt.act_order) Q = Q.index({Slice(), invperm});
  res.codes = Q;
  res.scales = scales.to(opt.scale_dtype);
  res.zeros = zeros.to(at::kByte);
  res.g_idx = g_idx.to(at::kInt);
  res.loss = loss;
  return res;
}

}  // namespace quantcore::algorithms
