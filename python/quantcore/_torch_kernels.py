"""Pure-PyTorch implementations of quantcore ops for devices without a native
kernel (CUDA when quantcore was built without its CUDA kernels), registered
with the dispatcher so ``torch.ops.quantcore.*`` and everything built on it
(``QuantLinear``'s dequantize fallback, GPTQ calibration on the GPU) work on
any device. A CUDA build registers its own kernels and these stay unused.
"""

from __future__ import annotations

import torch

from . import _C


def unpack_torch(packed: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """``quantcore.unpack`` with tensor ops: code ``j`` of a row sits at bit
    ``bits * j`` of the row's little-endian bit stream (it may straddle two words)."""
    if packed.dtype not in (torch.uint8, torch.int32):
        raise TypeError(f"quantcore.unpack: packed must be uint8 or int32, got {packed.dtype}")
    if not 2 <= bits <= 8:
        raise ValueError(f"quantcore.unpack: bits must be in [2, 8], got {bits}")
    word_bits = 8 if packed.dtype == torch.uint8 else 32
    row_bits = packed.shape[-1] * word_bits
    if row_bits % bits:
        raise ValueError("quantcore.unpack: rows must hold whole codes")
    pos = torch.arange(row_bits // bits, device=packed.device) * bits
    index, offset = pos // word_bits, pos % word_bits
    words = packed.to(torch.int64) & ((1 << word_bits) - 1)
    padded = torch.cat([words, torch.zeros_like(words[..., :1])], dim=-1)  # the word after the last
    codes = ((words[..., index] >> offset) | (padded[..., index + 1] << (word_bits - offset))) & ((1 << bits) - 1)
    if signed:
        codes = torch.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
        return codes.to(torch.int8)
    return codes.to(torch.uint8)


if not _C.cuda_kernels:
    _lib = torch.library.Library("quantcore", "IMPL")
    _lib.impl("unpack", unpack_torch, "CUDA")


# fp16's smallest normal number: the floor of a learned scale (kMinLearnedScale in
# cpp/kernels/qat_fake_quant.h).
MIN_LEARNED_SCALE = 6.103515625e-05


def snap_grid(scale, zero, bits: int, grid_dtype):
    """A learnable grid as the kernels use it (``grid_dtype`` set): scales rounded to
    ``grid_dtype`` and floored at ``MIN_LEARNED_SCALE``, zero points rounded half to
    even and clamped to ``[0, 2**bits - 1]``; unchanged when ``grid_dtype`` is None."""
    if grid_dtype is None:
        return scale, zero
    s = scale.detach().to(grid_dtype).float().clamp_min(MIN_LEARNED_SCALE)
    z = zero.detach().float().round().clamp(0, (1 << bits) - 1) if zero is not None else None
    return s, z


def _qat_grid(x, scale, zero, bits, group_size):
    rows, cols = x.shape
    qmax = float((1 << bits) - 1)
    s = scale.float().repeat_interleave(group_size, 1).expand(rows, cols)
    z = (zero.float() if zero is not None else torch.full_like(scale, float(1 << (bits - 1)), dtype=torch.float32))
    z = z.repeat_interleave(group_size, 1).expand(rows, cols)
    return s, z, qmax


def qat_fake_quantize_torch(x, scale, zero, bits: int, group_size: int, grid_dtype=None, grad_factor: float = 1.0):
    """``quantcore.qat_fake_quantize`` with tensor ops (the same arithmetic as the C++ kernel)."""
    s, z, qmax = _qat_grid(x, *snap_grid(scale, zero, bits, grid_dtype), bits, group_size)
    q = torch.clamp(torch.round(x.float() / s) + z, 0, qmax)
    return ((q - z) * s).to(x.dtype)


def qat_fake_quantize_backward_torch(grad, x, scale, zero, bits: int, group_size: int, grid_dtype=None,
                                     grad_factor: float = 1.0):
    """``quantcore.qat_fake_quantize_backward`` with tensor ops."""
    s, z, qmax = _qat_grid(x, *snap_grid(scale, zero, bits, grid_dtype), bits, group_size)
    g = grad.float()
    v = x.float() / s
    rv = torch.round(v)
    q = rv + z
    inside = (q >= 0) & (q <= qmax)
    qc = torch.clamp(q, 0, qmax)
    rows, cols = x.shape
    groups = cols // group_size
    ds = torch.where(inside, g * (rv - v), g * (qc - z)).view(rows, groups, group_size).sum(-1) * grad_factor
    dz = torch.where(inside, torch.zeros_like(g), -g * s).view(rows, groups, group_size).sum(-1) * grad_factor
    if scale.shape[0] == 1 and rows > 1:
        ds, dz = ds.sum(0, keepdim=True), dz.sum(0, keepdim=True)
    if zero is None:
        dz = torch.zeros_like(dz)
    return torch.where(inside, g, torch.zeros_like(g)).to(x.dtype), ds, dz


def fake_quantize_per_token_torch(x, bits: int, symmetric: bool):
    """``quantcore.fake_quantize_per_token`` with tensor ops (RTN's min/max grid per row,
    fp32 scales; rows holding NaN/Inf become NaN)."""
    xf = x.float().reshape(-1, x.shape[-1])
    maxq = float((1 << bits) - 1)
    lo, hi = xf.amin(1, keepdim=True), xf.amax(1, keepdim=True)
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        s = torch.where(amax > 0, (2 * amax) / maxq, torch.ones_like(amax))
        z = torch.full_like(s, float((1 << bits) // 2))
    else:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        s = torch.where(hi > lo, (hi - lo) / maxq, torch.ones_like(hi))
    s = torch.where(s > 0, s, torch.full_like(s, 2.0 ** -148))  # twice the smallest denormal, as rtn.cpp
    if not symmetric:
        z = torch.clamp(torch.round(-lo / s), 0, maxq)
    y = (torch.clamp(torch.round(xf / s) + z, 0, maxq) - z) * s
    y = torch.where(torch.isfinite(xf).all(1, keepdim=True), y, torch.full_like(y, float("nan")))
    return y.to(x.dtype).view(x.shape)


if not _C.cuda_kernels:  # a CUDA build has kernels for these
    _qat_lib = torch.library.Library("quantcore", "IMPL")
    _qat_lib.impl("qat_fake_quantize", qat_fake_quantize_torch, "CUDA")
    _qat_lib.impl("qat_fake_quantize_backward", qat_fake_quantize_backward_torch, "CUDA")
    _qat_lib.impl("fake_quantize_per_token", fake_quantize_per_token_torch, "CUDA")
