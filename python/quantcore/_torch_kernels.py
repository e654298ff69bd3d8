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
