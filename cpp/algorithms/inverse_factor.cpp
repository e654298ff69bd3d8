#include "inverse_factor.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace quantcore::algorithms {

namespace {

at::Tensor block_of(const at::Tensor& m, int64_t r, int64_t nr, int64_t c, int64_t nc) {
  return m.narrow(0, r, nr).narrow(1, c, nc);
}

// m[i] <- m[order[i]] for every row, following the permutation's cycles with
// one row held aside.
void permute_rows_inplace(at::Tensor& m, const std::vector<int64_t>& order) {
  const int64_t n = int64_t(order.size());
  std::vector<char> done(size_t(n), 0);
  at::Tensor held = at::empty({m.size(1)}, m.options());
  for (int64_t start = 0; start < n; ++start) {
    if (done[size_t(start)] || order[size_t(start)] == start) continue;
    held.copy_(m.select(0, start));
    int64_t i = start;
    while (true) {
      done[size_t(i)] = 1;
      const int64_t from = order[size_t(i)];
      if (from == start) {
        m.select(0, i).copy_(held);
        break;
      }
      m.select(0, i).copy_(m.select(0, from));
      i = from;
    }
  }
}

void transpose_inplace(at::Tensor& m, int64_t block) {
  const int64_t n = m.size(0);
  for (int64_t i = 0; i < n; i += block) {
    const int64_t ib = std::min(block, n - i);
    at::Tensor diag = block_of(m, i, ib, i, ib);
    diag.copy_(diag.t().contiguous());
    for (int64_t j = i + ib; j < n; j += block) {
      const int64_t jb = std::min(block, n - j);
      at::Tensor upper = block_of(m, i, ib, j, jb), lower = block_of(m, j, jb, i, ib);
      at::Tensor saved = upper.clone();
      upper.copy_(lower.t());
      lower.copy_(saved.t());
    }
  }
}

// Lower triangle (diagonal included) of a square block, the rest zero.
at::Tensor lower_of(const at::Tensor& square) { return at::tril(square); }

// Writes the lower triangle (diagonal included) of `src` into `dst`, leaving
// dst's strict upper triangle as it is.
void write_lower(at::Tensor dst, const at::Tensor& src) {
  at::Tensor keep = at::triu(dst, 1);
  dst.copy_(keep.add_(at::tril(src)));
}

}  // namespace

void permute_symmetric_inplace(at::Tensor& m, const std::vector<int64_t>& order, int64_t block) {
  // (M[o, :])^T = M[:, o] for symmetric M; its rows in order o give M[o][:, o].
  permute_rows_inplace(m, order);
  transpose_inplace(m, block);
  permute_rows_inplace(m, order);
}

bool exactly_symmetric(const at::Tensor& m, int64_t block) {
  const int64_t n = m.size(0);
  for (int64_t i = 0; i < n; i += block) {
    const int64_t ib = std::min(block, n - i);
    for (int64_t j = i; j < n; j += block) {
      const int64_t jb = std::min(block, n - j);
      if (!at::equal(block_of(m, i, ib, j, jb), block_of(m, j, jb, i, ib).t())) return false;
    }
  }
  return true;
}

bool cholesky_lower_inplace(at::Tensor& a, int64_t block) {
  // Left-looking: block column j is updated with the finished columns to its
  // left, then factored; nothing right of it is read or written.
  const int64_t n = a.size(0);
  for (int64_t j = 0; j < n; j += block) {
    const int64_t jb = std::min(block, n - j);
    at::Tensor diag = block_of(a, j, jb, j, jb);
    at::Tensor d = lower_of(diag);  // the diagonal block's own copy: its upper half stays G
    if (j > 0) {
      at::Tensor left = block_of(a, j, jb, 0, j);
      d.addmm_(left, left.t(), 1, -1);
    }
    auto [l11, info] = at::linalg_cholesky_ex(d);
    if (info.item<int>() != 0) return false;
    write_lower(diag, l11);
    if (j + jb < n) {
      at::Tensor below = block_of(a, j + jb, n - j - jb, j, jb);  // strictly lower: updated in place
      if (j > 0) below.addmm_(block_of(a, j + jb, n - j - jb, 0, j), block_of(a, j, jb, 0, j).t(), 1, -1);
      // L21 = A21 L11^-T: solve X L11^T = A21.
      below.copy_(at::linalg_solve_triangular(l11.t(), below, /*upper=*/true, /*left=*/false));
    }
  }
  return true;
}

void invert_lower_inplace(at::Tensor& l, int64_t block) {
  // [[L11, 0], [L21, L22]]^-1 = [[X11, 0], [-X22 L21 X11, X22]]: from the last
  // block column back, each needs only the already inverted trailing block X22,
  // read through its lower triangle (its strict upper part holds G).
  const int64_t n = l.size(0);
  const int64_t last = (n - 1) / block * block;
  for (int64_t j = last; j >= 0; j -= block) {
    const int64_t jb = std::min(block, n - j);
    at::Tensor diag = block_of(l, j, jb, j, jb);
    at::Tensor x11 = at::linalg_solve_triangular(lower_of(diag), at::eye(jb, l.options()), /*upper=*/false);
    const int64_t t0 = j + jb;  // the trailing block: rows and columns [t0, n)
    if (t0 < n) {
      at::Tensor l21 = block_of(l, t0, n - t0, j, jb);
      at::Tensor product = at::empty({n - t0, jb}, l.options());  // X22 L21
      for (int64_t r = t0; r < n; r += block) {
        const int64_t rb = std::min(block, n - r);
        at::Tensor out = product.narrow(0, r - t0, rb);
        // Row panel r of X22: full blocks left of its diagonal block, then the diagonal block's lower part.
        at::matmul_out(out, lower_of(block_of(l, r, rb, r, rb)), l21.narrow(0, r - t0, rb));
        if (r > t0) out.addmm_(block_of(l, r, rb, t0, r - t0), l21.narrow(0, 0, r - t0));
      }
      l21.copy_(product.matmul(x11).neg_());
    }
    write_lower(diag, x11);
  }
}

void restore_lower_from_upper(at::Tensor& m, const at::Tensor& diagonal, int64_t block) {
  const int64_t n = m.size(0);
  for (int64_t i = 0; i < n; i += block) {
    const int64_t ib = std::min(block, n - i);
    at::Tensor diag = block_of(m, i, ib, i, ib);
    at::Tensor upper = at::triu(diag, 1);
    diag.copy_(upper + upper.t());
    if (i > 0) block_of(m, i, ib, 0, i).copy_(block_of(m, 0, i, i, ib).t());
  }
  m.diagonal().copy_(diagonal);
}

at::Tensor upper_factor_block(const at::Tensor& x, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
  // U[i, j] = X[n-1-i, n-1-j].
  const int64_t n = x.size(0);
  at::Tensor u = block_of(x, n - r0 - nr, nr, n - c0 - nc, nc).flip({0, 1});
  // Entries that came from X's strict upper triangle (G, not X) lie below U's diagonal.
  if (c0 < r0 + nr) u = at::triu(u, r0 - c0);
  return u.contiguous();
}

void set_lower_identity(at::Tensor& m, int64_t block) {
  const int64_t n = m.size(0);
  for (int64_t i = 0; i < n; i += block) {
    const int64_t ib = std::min(block, n - i);
    if (i > 0) block_of(m, i, ib, 0, i).zero_();
    write_lower(block_of(m, i, ib, i, ib), at::eye(ib, m.options()));
  }
}

bool lower_finite(const at::Tensor& m, int64_t block) {
  // NaN/Inf reach min or max: per row panel, no n x n temporary.
  const int64_t n = m.size(0);
  for (int64_t i = 0; i < n; i += block) {
    const int64_t ib = std::min(block, n - i);
    auto [lo, hi] = at::aminmax(at::tril(block_of(m, i, ib, 0, i + ib), i));
    if (!std::isfinite(lo.item<double>()) || !std::isfinite(hi.item<double>())) return false;
  }
  return true;
}

}  // namespace quantcore::algorithms
