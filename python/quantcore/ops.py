"""Low-level operators of quantcore, callable on tensors.

Each function here validates its arguments and calls the C++ operator
registered as ``torch.ops.quantcore.<name>`` (which validates again, so direct
``torch.ops`` users get the same errors). Fake implementations for meta tensors
and ``torch.compile`` live in :mod:`quantcore._fake_ops`.

Canonical quantized-weight layout, used by every op and by ``QuantLinear``:

* codes: unsigned ``bits``-bit integers ``q``; a weight is ``(q - z) * s``;
* ``qweight``: int32 ``[N, K * bits / 32]``, each row's codes packed
  little-endian along K (code ``j`` at bit ``bits * j`` of the row);
* ``scales``: ``[N, K / group_size]``, ``zeros``: uint8, same shape, or ``None``
  for symmetric quantization, where ``z = 2 ** (bits - 1)``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C

__all__ = ["pack", "unpack", "rtn_quantize", "qlinear", "dequantize", "PER_CHANNEL", "PER_TENSOR"]

#: ``group_size`` value meaning one scale per output row.
PER_CHANNEL = -1
#: ``group_size`` value meaning a single scale for the whole tensor.
PER_TENSOR = 0

_SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _require_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def pack(codes: torch.Tensor, bits: int, word_bits: int = 32) -> torch.Tensor:
    """Pack integer codes along the last dimension into ``uint8`` or ``int32`` words.

    ``codes`` is ``uint8`` for unsigned codes in ``[0, 2**bits)`` or ``int8`` for
    signed codes in ``[-2**(bits-1), 2**(bits-1))``; values out of range raise.
    The last dimension times ``bits`` must be a multiple of ``word_bits``.

    >>> import torch, quantcore
    >>> quantcore.ops.pack(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8), bits=4)
    tensor([[-2023406815]], dtype=torch.int32)
    """
    _require_tensor(codes, "codes")
    return torch.ops.quantcore.pack(codes, int(bits), int(word_bits))


def unpack(packed: torch.Tensor, bits: int, signed: bool = False) -> torch.Tensor:
    """Inverse of :func:`pack`: ``int8`` codes when ``signed`` else ``uint8``.

    >>> import torch, quantcore
    >>> w = quantcore.ops.pack(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8), bits=4)
    >>> quantcore.ops.unpack(w, bits=4)
    tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8)
    """
    _require_tensor(packed, "packed")
    return torch.ops.quantcore.unpack(packed, int(bits), bool(signed))


def rtn_quantize(
    weight: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    symmetric: bool = True,
    mse_clip: bool = False,
    clip_grid: int = 100,
    clip_max_shrink: float = 0.8,
    scale_dtype: torch.dtype = torch.float16,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of a 2-D weight ``[N, K]``.

    Returns ``(codes, scales, zeros)``: ``codes`` uint8 ``[N, K]``; ``scales``
    (``scale_dtype``) and ``zeros`` (uint8) ``[N, K // group_size]``, or
    ``[N, 1]`` per channel (``group_size=-1``), or ``[1, 1]`` per tensor
    (``group_size=0``). Symmetric grids use ``z = 2**(bits-1)`` and
    ``s = 2*max|w| / (2**bits - 1)``; asymmetric grids map ``[min(w,0), max(w,0)]``
    onto ``[0, 2**bits - 1]``. ``mse_clip`` searches a grid of ``clip_grid``
    shrink ratios (down to ``1 - clip_max_shrink``) for the lowest squared
    error per group. The input is never modified.

    >>> import torch, quantcore
    >>> codes, scales, zeros = quantcore.ops.rtn_quantize(torch.randn(8, 64), bits=4, group_size=32)
    >>> codes.shape, scales.shape, int(zeros[0, 0])
    (torch.Size([8, 64]), torch.Size([8, 2]), 8)
    """
    _require_tensor(weight, "weight")
    if scale_dtype not in _SCALE_DTYPES:
        raise TypeError(f"scale_dtype must be one of {_SCALE_DTYPES}, got {scale_dtype}")
    return torch.ops.quantcore.rtn_quantize(
        weight, int(bits), int(group_size), bool(symmetric), bool(mse_clip), int(clip_grid),
        float(clip_max_shrink), scale_dtype,
    )


def qlinear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    bits: int,
    group_size: int,
) -> torch.Tensor:
    """``x @ dequantize(qweight)^T + bias`` with dequantization fused into the matmul.

    ``x`` is ``[..., K]`` (float32/float16/bfloat16, contiguous); the result has
    ``x``'s dtype and shape ``[..., N]``. On the CPU, scales other than float32
    are converted on every call: keep a float32 copy for repeated use
    (``QuantLinear`` does). On CUDA (fp16/bf16 ``x``) the scales are read in
    their own dtype.
    """
    _require_tensor(x, "x")
    _require_tensor(qweight, "qweight")
    _require_tensor(scales, "scales")
    return torch.ops.quantcore.qlinear(x, qweight, scales, zeros, bias, int(bits), int(group_size))


def dequantize(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: Optional[torch.Tensor],
    bits: int,
    group_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Float weight ``[N, K]`` of a packed weight: ``(q - z) * s`` per group.

    >>> import torch, quantcore
    >>> w = torch.randn(4, 64)
    >>> codes, s, z = quantcore.ops.rtn_quantize(w, bits=8, group_size=64, scale_dtype=torch.float32)
    >>> dq = quantcore.ops.dequantize(quantcore.ops.pack(codes, 8), s, None, bits=8, group_size=64)
    >>> bool((dq - w).abs().max() <= s.max() / 2 + 1e-6)
    True
    """
    for name, t in (("qweight", qweight), ("scales", scales)):
        _require_tensor(t, name)
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if qweight.dtype != torch.int32:
        raise TypeError(f"qweight must be torch.int32, got {qweight.dtype}")
    if not scales.dtype.is_floating_point:
        raise TypeError(f"scales must be a float tensor, got {scales.dtype}")
    n, k = qweight.shape[0], qweight.shape[1] * 32 // bits
    gs = k if group_size in (PER_CHANNEL, PER_TENSOR) else group_size
    if (qweight.is_cuda and _C.cuda_kernels and bits in (2, 4, 8) and gs > 0 and k % gs == 0
            and gs % (32 // bits) == 0
            and tuple(scales.shape) == (n, k // gs) and qweight.is_contiguous() and scales.is_contiguous()):
        return torch.ops.quantcore.dequantize_packed(  # the CUDA kernel (it checks the rest)
            qweight, scales, zeros.contiguous() if zeros is not None else None, bits, gs, dtype)
    if gs <= 0 or k % gs:
        raise ValueError(f"group_size {group_size} does not divide the {k} input features")
    if tuple(scales.shape) not in ((n, k // gs), (1, 1)):
        raise ValueError(f"scales must be [{n}, {k // gs}] (or [1, 1] per tensor), got {tuple(scales.shape)}")
    if zeros is not None:
        _require_tensor(zeros, "zeros")
        if zeros.dtype != torch.uint8 or zeros.shape != scales.shape:
            raise ValueError(f"zeros must be uint8 of shape {tuple(scales.shape)}, got {zeros.dtype} "
                             f"{tuple(zeros.shape)}")
    z = zeros.to(torch.float32) if zeros is not None else torch.full_like(scales, 1 << (bits - 1),
                                                                             dtype=torch.float32)
    s = scales.to(torch.float32)
    if s.shape[0] == 1 and n != 1:  # per-tensor grid
        s, z = s.expand(n, -1), z.expand(n, -1)
    # A block of rows at a time: the only weight-sized tensor is the result.
    # (q - z) * s in float32 equals the integer difference scaled: codes and zeros are small integers.
    out = torch.empty(n, k, dtype=dtype, device=qweight.device)
    rows = max(1, (1 << 20) // max(k, 1))
    for r in range(0, n, rows):
        codes = unpack(qweight[r:r + rows], bits)
        w = codes.view(-1, k // gs, gs).to(torch.float32)
        w.sub_(z[r:r + rows].unsqueeze(-1)).mul_(s[r:r + rows].unsqueeze(-1))
        out[r:r + rows] = w.view(-1, k)
    return out
