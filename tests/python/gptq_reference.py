"""A straightforward PyTorch transcription of GPTQ's reference algorithm
(IST-DASLab/gptq, gptq.py ``fasterquant`` with its ``Quantizer``), used by the
tests (identical codes) and benchmarks/bench_gptq_solver.py (speed baseline).
Written for clarity, line by line as the paper's code, not for speed."""

from __future__ import annotations

import torch


def grid_ref(w, bits, sym, scale_dtype):
    maxq = 2**bits - 1
    lo, hi = w.min(1).values, w.max(1).values
    if sym:
        amax = torch.maximum(lo.abs(), hi.abs())
        s = torch.where(amax > 0, amax * 2 / maxq, torch.ones_like(amax))
    else:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        s = torch.where(hi > lo, (hi - lo) / maxq, torch.ones_like(hi))
    s = s.to(scale_dtype).float()
    s = torch.where(s > 0, s, torch.full_like(s, 5.9604645e-08 if scale_dtype == torch.float16 else 1e-38))
    z = torch.full_like(s, 2 ** (bits - 1)) if sym else torch.round(-lo / s).clamp(0, maxq)
    return s.unsqueeze(1), z.unsqueeze(1)


def gptq_ref(W, H, bits, gs, sym, act_order=False, static_groups=False, percdamp=0.01, blocksize=128,
             scale_dtype=torch.float32):
    W, H = W.clone().float(), H.clone()
    rows, cols = W.shape
    maxq = 2**bits - 1
    gsz = cols if gs == -1 else gs
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    statics = [grid_ref(W[:, g:g + gsz], bits, sym, scale_dtype) for g in range(0, cols, gsz)] \
        if static_groups and gs != -1 else []
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
        invperm = torch.argsort(perm)
    damp = percdamp * torch.mean(torch.diag(H))
    H[range(cols), range(cols)] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    Q = torch.zeros_like(W)
    grid = grid_ref(W, bits, sym, scale_dtype) if gs == -1 else None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            w, d = W1[:, i], Hinv1[i, i]
            if gs != -1:
                if static_groups:
                    grid = statics[(int(perm[col]) if act_order else col) // gsz]
                elif col % gsz == 0:
                    grid = grid_ref(W[:, col:col + gsz], bits, sym, scale_dtype)
            q = torch.clamp(torch.round(w.unsqueeze(1) / grid[0]) + grid[1], 0, maxq).squeeze(1)
            Q[:, col] = q
            err = (w - (q - grid[1].squeeze(1)) * grid[0].squeeze(1)) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if act_order:
        Q = Q[:, invperm]
    return Q.to(torch.uint8)
