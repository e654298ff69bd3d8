"""ggml blocks -> QuantLinear's integer codes and group scales, for the types
whose grid is ``scale * (code - zero)`` with an integer zero point:

========  ====  =====  ====  =====================================
type      bits  group  zero  scale
========  ====  =====  ====  =====================================
Q8_0      8     32     128   d (fp16)
Q4_0      4     32     8     d (fp16)
Q5_0      5     32     16    d (fp16)
Q3_K      3     16     4     d * (6-bit sub-scale - 32) (fp32, exact)
Q6_K      6     16     32    d * (int8 sub-scale) (fp32, exact)
========  ====  =====  ====  =====================================

The layer then dequantizes to exactly the values ggml's reference does (one
fp32 multiply of the same two factors). Q4_1, Q5_1, Q2_K, Q4_K and Q5_K carry a
float minimum per block (``scale * code - min``), which QuantLinear's integer
zero points cannot hold; those tensors load as float.

Block layouts: ggml-quants.h (see cpp/kernels/gguf/ggml_types.h).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .types import BLOCK_SIZES, GGMLType

__all__ = ["GGMLCodes", "MAPPABLE_TYPES", "ggml_codes"]


class GGMLCodes(NamedTuple):
    codes: torch.Tensor   # uint8 [rows, n]
    scales: torch.Tensor  # [rows, n / group_size], float16 or float32
    bits: int
    group_size: int
    zero: int             # the implicit symmetric zero point, 2**(bits-1)


def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2")[..., 0]


def _q8_0(blk: np.ndarray):
    d = _f16(blk[:, 0:2])
    q = blk[:, 2:34].view(np.int8).astype(np.int16) + 128
    return q.astype(np.uint8), d[:, None], 8, 32


def _q4_0(blk: np.ndarray):
    d = _f16(blk[:, 0:2])
    qs = blk[:, 2:18]
    return np.concatenate([qs & 0xF, qs >> 4], axis=1), d[:, None], 4, 32


def _q5_0(blk: np.ndarray):
    d = _f16(blk[:, 0:2])
    qh = np.ascontiguousarray(blk[:, 2:6]).view("<u4")  # [blocks, 1]: bit j is element j's fifth bit
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4
    qs = blk[:, 6:22]
    return np.concatenate([qs & 0xF, qs >> 4], axis=1) | high, d[:, None], 5, 32


def _q3_k(blk: np.ndarray):
    hmask, qs, packed = blk[:, 0:32], blk[:, 32:96], blk[:, 96:108]
    d = _f16(blk[:, 108:110]).astype(np.float32)
    j = np.arange(16)
    # 16 six-bit sub-scales: low nibbles in bytes 0..7 (two per byte), high pairs in bytes 8..11.
    low = np.where(j < 8, packed[:, j % 8] & 0xF, packed[:, j % 8] >> 4)
    high = (packed[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    sub = (low | (high << 4)).astype(np.int32) - 32
    # Element e = half*128 + k*32 + l: 2-bit field k of qs[half*32 + l], high bit (half*4 + k) of hmask[l].
    e = np.arange(256)
    half, k, l = e // 128, (e // 32) % 4, e % 32
    lo = (qs[:, half * 32 + l] >> (2 * k)) & 3
    hi = (hmask[:, l] >> (half * 4 + k)) & 1
    return (lo | (hi << 2)).astype(np.uint8), d[:, None] * sub.astype(np.float32), 3, 16


def _q6_k(blk: np.ndarray):
    ql, qh = blk[:, 0:128], blk[:, 128:192]
    sub = blk[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(blk[:, 208:210]).astype(np.float32)
    # Element e = half*128 + k*32 + l: nibble (k >= 2) of ql[half*64 + (k % 2)*32 + l], bits 2k..2k+1 of qh[half*32 + l].
    e = np.arange(256)
    half, k, l = e // 128, (e // 32) % 4, e % 32
    low = (ql[:, half * 64 + (k % 2) * 32 + l] >> (4 * (k // 2))) & 0xF
    high = (qh[:, half * 32 + l] >> (2 * k)) & 3
    return (low | (high << 4)).astype(np.uint8), d[:, None] * sub, 6, 16


_DECODERS = {GGMLType.Q8_0: _q8_0, GGMLType.Q4_0: _q4_0, GGMLType.Q5_0: _q5_0,
             GGMLType.Q3_K: _q3_k, GGMLType.Q6_K: _q6_k}
MAPPABLE_TYPES = frozenset(_DECODERS)


def ggml_codes(data: bytes, ggml_type: GGMLType, rows: int, n: int) -> Optional[GGMLCodes]:
    """QuantLinear's view of ``rows`` rows of ``n`` elements of ``ggml_type``
    blocks, or None when the type's grid has no integer zero point."""
    ggml_type = GGMLType(ggml_type)
    decode = _DECODERS.get(ggml_type)
    if decode is None:
        return None
    block, size = BLOCK_SIZES[ggml_type]
    if rows <= 0 or n <= 0 or n % block or len(data) != rows * (n // block) * size:
        raise ValueError(f"{ggml_type.name}: {len(data)} bytes are not {rows} rows of {n} elements")
    blk = np.frombuffer(data, dtype=np.uint8).reshape(rows * (n // block), size)
    codes, scales, bits, group = decode(blk)
    codes = torch.from_numpy(np.ascontiguousarray(codes).reshape(rows, n))
    scales = torch.from_numpy(np.ascontiguousarray(scales).reshape(rows, n // group))
    return GGMLCodes(codes, scales, bits, group, 1 << (bits - 1))
