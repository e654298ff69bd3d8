"""``QuantLinear``: a frozen linear layer holding packed integer weights."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..config import QuantConfig

__all__ = ["QuantLinear", "is_conv1d", "linear_weight"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2 style ``Conv1D`` (transformers.pytorch_utils): a linear layer storing ``W^T``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The ``[out_features, in_features]`` weight of an ``nn.Linear`` or ``Conv1D``."""
    w = module.weight
    return w.t() if is_conv1d(module) else w


class QuantLinear(nn.Module):
    """Linear layer with ``bits``-bit integer weights and group-wise scales.

    Buffers (all in ``state_dict``):

    * ``qweight`` int32 ``[out, in * bits / 32]``: codes packed along the input dim;
    * ``scales`` ``[out, in / group_size]`` in ``scale_dtype``;
    * ``zeros`` uint8, same shape (asymmetric only; symmetric uses ``2**(bits-1)``);
    * ``bias`` ``[out]`` (optional).

    ``forward`` runs the fused CPU kernel for 4- and 8-bit weights (dequantize +
    ``F.linear`` otherwise). The layer keeps a float32 copy of the scales for the
    kernel, rebuilt by :meth:`repack` after loading; ``.to(dtype)`` on the model
    converts the bias but never the scales, which would change the weights.

    >>> import torch, quantcore
    >>> lin = torch.nn.Linear(64, 32)
    >>> q = quantcore.QuantLinear.from_linear(lin, quantcore.RTNConfig(bits=8, group_size=32))
    >>> x = torch.randn(3, 64)
    >>> bool(torch.allclose(q(x), torch.nn.functional.linear(x, q.dequantize(), lin.bias), atol=1e-5))
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bits: int = 4,
        group_size: int = 128,
        sym: bool = True,
        bias: bool = True,
        scale_dtype: torch.dtype = torch.float16,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in/out features must be positive, got {in_features}, {out_features}")
        if not 2 <= bits <= 8:
            raise ValueError(f"bits must be in [2, 8], got {bits}")
        if group_size in (ops.PER_CHANNEL, ops.PER_TENSOR):
            group_size = in_features
        if group_size <= 0 or in_features % group_size:
            raise ValueError(f"group_size {group_size} does not divide in_features {in_features}")
        if (in_features * bits) % 32:
            raise ValueError(
                f"in_features ({in_features}) x bits ({bits}) must be a multiple of 32 to pack "
                "the codes into int32 words")
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group_size = group_size
        self.sym = sym
        groups = in_features // group_size
        self.register_buffer(
            "qweight", torch.zeros(out_features, in_features * bits // 32, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=scale_dtype, device=device))
        zeros = None if sym else torch.full(
            (out_features, groups), 1 << (bits - 1), dtype=torch.uint8, device=device)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)
        self.register_buffer("_kernel_scales", None, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.repack())
        self.repack()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zeros: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        *,
        bits: int,
        group_size: int,
        dtype: Optional[torch.dtype] = None,
    ) -> "QuantLinear":
        """Build from unpacked codes ``[out, in]`` (uint8) and their grid.

        ``zeros=None`` means symmetric. Per-tensor grids (``scales`` of shape
        ``[1, 1]``) are expanded per output row.
        """
        if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8 or codes.dim() != 2:
            raise TypeError("codes must be a 2-D torch.uint8 tensor [out_features, in_features]")
        out_features, in_features = codes.shape
        gs = in_features if group_size in (ops.PER_CHANNEL, ops.PER_TENSOR) else max(group_size, 1)
        if tuple(scales.shape) not in {(out_features, in_features // gs), (1, 1)}:
            raise ValueError(f"scales must be [{out_features}, {in_features // gs}] or [1, 1], "
                             f"got {tuple(scales.shape)}")
        if zeros is not None and tuple(zeros.shape) != tuple(scales.shape):
            raise ValueError(f"zeros must have the shape of scales {tuple(scales.shape)}, got {tuple(zeros.shape)}")
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ValueError(f"bias must be [{out_features}], got {tuple(bias.shape)}")
        if scales.shape[0] == 1 and out_features > 1:
            scales = scales.expand(out_features, -1)
            zeros = zeros.expand(out_features, -1) if zeros is not None else None
        if group_size in (ops.PER_CHANNEL, ops.PER_TENSOR):
            group_size = in_features
        layer = cls(
            in_features, out_features, bits=bits, group_size=group_size, sym=zeros is None,
            bias=bias is not None, scale_dtype=scales.dtype,
            dtype=dtype or (bias.dtype if bias is not None else torch.float32), device=codes.device)
        with torch.no_grad():
            layer.qweight.copy_(ops.pack(codes.contiguous(), bits, 32))
            layer.scales.copy_(scales)
            if zeros is not None:
                layer.zeros.copy_(zeros)
            if bias is not None:
                layer.bias.copy_(bias)
        layer.repack()
        return layer

    @classmethod
    def from_linear(cls, module: nn.Module, config: QuantConfig) -> "QuantLinear":
        """Quantize an ``nn.Linear`` (or GPT-2 ``Conv1D``) with round-to-nearest.

        The source module is not modified.
        """
        if not isinstance(module, nn.Linear) and not is_conv1d(module):
            raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")
        weight = linear_weight(module).detach()
        if weight.device.type != "cpu":
            weight = weight.cpu()
        codes, scales, zeros = ops.rtn_quantize(
            weight.contiguous(), bits=config.bits, group_size=config.group_size, symmetric=config.sym,
            mse_clip=getattr(config, "mse_clip", False), clip_grid=getattr(config, "clip_grid", 100),
            clip_max_shrink=getattr(config, "clip_max_shrink", 0.8), scale_dtype=config.scale_dtype)
        bias = module.bias.detach().cpu() if module.bias is not None else None
        layer = cls.from_codes(
            codes, scales, None if config.sym else zeros, bias, bits=config.bits,
            group_size=config.group_size, dtype=weight.dtype)
        return layer.to(module.weight.device)

    # ------------------------------------------------------------------ kernel
    def repack(self) -> None:
        """Rebuild the kernel-side buffers from the canonical ones and check them.

        Called after construction and ``load_state_dict``; call it yourself after
        writing to ``scales`` or ``zeros`` in place.
        """
        if self.zeros is not None and self.zeros.numel() and int(self.zeros.max()) >= (1 << self.bits):
            raise ValueError(f"zeros hold values >= 2**bits ({1 << self.bits}); corrupt checkpoint?")
        if self.scales.numel() and not bool(torch.isfinite(self.scales).all()):
            raise ValueError("scales contain NaN or Inf; corrupt checkpoint?")
        self._kernel_scales = self.scales if self.scales.dtype == torch.float32 else self.scales.float()

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) would cast the scales and so change the weights: move
        # them to the new device but keep their dtype.
        kept = {name: self._buffers.pop(name) for name in ("scales", "_kernel_scales")}
        super()._apply(fn, recurse)
        for name, t in kept.items():
            if t is not None:
                device = fn(torch.empty(0, device=t.device)).device
                t = t.to(device)
            self._buffers[name] = t
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"QuantLinear expects float32/float16/bfloat16 input, got {x.dtype}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        if self.bits in (4, 8) and x.device.type == "cpu":
            x2 = x.reshape(-1, self.in_features)
            if not x2.is_contiguous():
                x2 = x2.contiguous()
            y = torch.ops.quantcore.qlinear(
                x2, self.qweight, self._kernel_scales, self.zeros, self.bias, self.bits, self.group_size)
            return y.view(*x.shape[:-1], self.out_features)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.dequantize(x.dtype), bias)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The float weight ``[out, in]`` these codes represent."""
        dtype = dtype or (self.bias.dtype if self.bias is not None else torch.float32)
        return ops.dequantize(self.qweight, self._kernel_scales, self.zeros, self.bits, self.group_size, dtype)

    # ---------------------------------------------------------------- reports
    def storage_bytes(self) -> int:
        """Bytes of the persistent buffers (what a checkpoint stores)."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.zeros, self.bias)
                   if t is not None)

    def weight_bits_per_element(self) -> float:
        """Bits per weight, counting codes, scales and zero points."""
        total = sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.zeros) if t is not None)
        return 8.0 * total / (self.in_features * self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, sym={self.sym}, bias={self.bias is not None}")
