"""A plain PyTorch transcription of AWQ's searches (AutoAWQ's
``_search_best_scale`` / ``_search_best_clip``), scoring candidates on the
explicit calibration inputs X rather than on a Hessian. The C++ searches must
pick the same scales and clip thresholds.

Differences from AutoAWQ, on purpose: the scale search scores the outputs of
the linears that share the input (not of the whole attention/MLP block) and
the clip search uses every token (AutoAWQ subsamples 512).
"""

from __future__ import annotations

import torch


def pseudo_quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool,
                    scale_dtype=torch.float16) -> torch.Tensor:
    """Group-wise RTN quantize + dequantize with quantcore's grid rules."""
    rows, cols = w.shape
    gs = cols if group_size == -1 else group_size
    v = w.reshape(rows, cols // gs, gs)
    maxq = 2 ** bits - 1
    lo, hi = v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
    if sym:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = torch.where(amax > 0, 2 * amax / maxq, torch.ones_like(amax))
    else:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = torch.where(hi > lo, (hi - lo) / maxq, torch.ones_like(hi))
    scale = scale.to(scale_dtype).float()
    zero = torch.full_like(scale, 2 ** (bits - 1)) if sym else torch.round(-lo / scale).clamp(0, maxq)
    q = torch.clamp(torch.round(v / scale) + zero, 0, maxq)
    return ((q - zero) * scale).reshape(rows, cols)


def search_scale(w, x, bits, group_size, sym, n_grid=20):
    """(best scales, losses per alpha): loss = ||X W^T - X (Q(W s)/s)^T||^2."""
    x_mean = x.abs().mean(0)
    ref = x @ w.T
    losses, best, best_s = [], float("inf"), None
    for i in range(n_grid):
        s = x_mean.pow(i / n_grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        wq = pseudo_quantize(w * s, bits, group_size, sym) / s
        loss = float((x @ wq.T - ref).double().pow(2).sum())
        losses.append(loss)
        if loss < best:
            best, best_s = loss, s
    return best_s, torch.tensor(losses, dtype=torch.float64)


def search_clip(w, x, bits, group_size, sym, n_grid=20, max_shrink=0.5):
    """Per (row, group) max |value| minimising that group's output error."""
    rows, cols = w.shape
    gs = cols if group_size == -1 else group_size
    wg = w.reshape(rows, 1, cols // gs, gs)
    xg = x.reshape(1, x.shape[0], cols // gs, gs)
    org_out = (xg * wg).sum(-1)
    org_max = wg.abs().amax(-1, keepdim=True)
    best_max, best_err = org_max.clone(), torch.full_like(org_max, float("inf"))
    for i in range(int(max_shrink * n_grid)):
        max_val = org_max * (1 - i / n_grid)
        cur = torch.clamp(wg, -max_val, max_val)
        q = pseudo_quantize(cur.reshape(rows, cols), bits, group_size, sym).reshape(wg.shape)
        err = ((xg * q).sum(-1) - org_out).pow(2).mean(1).view(best_err.shape)
        better = err < best_err
        best_err[better] = err[better]
        best_max[better] = max_val[better]
    return best_max.reshape(rows, cols // gs)
