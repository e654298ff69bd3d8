"""The tensor-core layout of 4-bit weights, built once from the canonical one.

The canonical layout (``QuantLinear.qweight`` int32 ``[N, K/8]``, code ``k`` of a
row at bits ``4 (k % 8)`` of word ``k // 8``; ``scales`` ``[N, K/group]``) is what
is saved. The CUDA GEMM (``torch.ops.quantcore.qgemm_tc``,
cpp/kernels/cuda/qgemm_tc_cuda.h) reads another one, in which every lane of a
warp loads, in one 16-byte read, the codes that are its mma.m16n8k16 B fragments
for a 32 x 32 tile:

* codes int32 ``[N/32, 4K]``: strip ``s`` (outputs ``32s .. 32s+31``), tile ``kt``
  (inputs ``32kt .. 32kt+31``) is 128 words; word ``4 l + w`` is lane ``l``'s
  (``g = l // 4``, ``t = l % 4``, ``w = 2 ks + np``), and its nibble
  ``4 e + 2 h + hk`` is the code of ``n = 32s + 16np + 8h + g``,
  ``k = 32kt + 16ks + 8hk + 2t + e``;
* scales ``[K/group, N]`` (the canonical ones transposed: a CTA copies the row of
  a group for its outputs in one piece); zeros likewise.

Both directions are plain tensor reshapes, so they run on any device and are
exact inverses (checked in tests/python/test_tc_layout.py).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["to_tc_layout", "from_tc_layout", "tc_layout_supported"]

# codes [N, K] viewed as [S, np, h, g, KT, ks, hk, t, e] -> [S, KT, g, t, ks, np, e, h, hk]
_TO_TC = (0, 4, 3, 7, 5, 1, 8, 2, 6)
_FROM_TC = tuple(sorted(range(9), key=lambda i: _TO_TC[i]))
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int64)


def tc_layout_supported(out_features: int, in_features: int, bits: int, group_size: int) -> bool:
    """Whether the tensor-core kernel takes this layer (4-bit, N % 32, K % 64, group % 32)."""
    return (bits == 4 and out_features % 32 == 0 and in_features % 64 == 0 and group_size % 32 == 0
            and in_features % group_size == 0)


def _unpack_nibbles(words: torch.Tensor) -> torch.Tensor:
    w = words.to(torch.int64).unsqueeze(-1)
    return ((w >> _SHIFTS.to(w.device)) & 0xF).reshape(*words.shape[:-1], words.shape[-1] * 8)


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    c = codes.to(torch.int64).reshape(*codes.shape[:-1], -1, 8)
    w = (c << _SHIFTS.to(c.device)).sum(-1)
    return torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)


def _transposed(t: torch.Tensor) -> torch.Tensor:
    # Group scales / zeros: canonical [N, G] <-> tensor-core [G, N].
    return t.t().contiguous()


def to_tc_layout(qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Canonical 4-bit ``(qweight [N, K/8], scales [N, G], zeros [N, G] or None)`` to
    the tensor-core layout ``(codes [N/32, 4K], scales [G, N], zeros [G, N] or None)``."""
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise TypeError("qweight must be a 2-D int32 tensor of packed 4-bit codes")
    n, k = qweight.shape[0], qweight.shape[1] * 8
    if n % 32 or k % 64:
        raise ValueError(f"the tensor-core layout needs N % 32 == 0 and K % 64 == 0, got N={n}, K={k}")
    if scales.dim() != 2 or scales.shape[0] != n or k % scales.shape[1] or (k // scales.shape[1]) % 32:
        raise ValueError(f"scales must be [N, K/group] with a group that is a multiple of 32, got {tuple(scales.shape)}")
    if zeros is not None and zeros.shape != scales.shape:
        raise ValueError("zeros must have the shape of scales")
    c = _unpack_nibbles(qweight).reshape(n // 32, 2, 2, 8, k // 32, 2, 2, 4, 2).permute(*_TO_TC)
    codes = _pack_nibbles(c.reshape(n // 32, -1)).contiguous()
    return (codes, _transposed(scales),
            _transposed(zeros) if zeros is not None else None)


def from_tc_layout(codes: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor]
                   ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Inverse of :func:`to_tc_layout`."""
    strips, k = codes.shape[0], codes.shape[1] // 4
    n = strips * 32
    c = _unpack_nibbles(codes).reshape(strips, k // 32, 8, 4, 2, 2, 2, 2, 2).permute(*_FROM_TC)
    qweight = _pack_nibbles(c.reshape(n, k))
    return (qweight, _transposed(scales),
            _transposed(zeros) if zeros is not None else None)
