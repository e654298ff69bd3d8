"""Shared by the format modules: codes of a QuantLinear in the original column
order, the checks every external format makes, and packing along dim 0."""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import torch

from .. import ops
from ..nn.quant_linear import QuantLinear


class ExportError(ValueError):
    """A model (or layer) that a format cannot represent exactly."""


def original_order_codes(layer: QuantLinear) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The layer's codes ``[out, in]`` (uint8) in the original column order, and
    GPTQ's ``g_idx`` when the layer is act-order (else None)."""
    codes = ops.unpack(layer.qweight.cpu(), layer.bits)
    if layer.perm is None:
        return codes, None
    original = torch.empty_like(codes).index_copy_(1, layer.perm.cpu().long(), codes)
    return original, layer.g_idx.cpu()


def zeros_of(layer: QuantLinear) -> torch.Tensor:
    """Zero points ``[out, groups]`` (uint8), ``2**(bits-1)`` for symmetric layers."""
    if layer.zeros is not None:
        return layer.zeros.cpu()
    return torch.full(tuple(layer.scales.shape), 1 << (layer.bits - 1), dtype=torch.uint8)


def check_exportable(name: str, layer: QuantLinear, fmt: str, bits: Iterable[int]) -> None:
    """What no external format stores: AWQ scales left on the layer, activation quantization."""
    if layer.bits not in tuple(bits):
        raise ExportError(f"{name}: {layer.bits}-bit weights cannot be stored in format {fmt!r} "
                          f"(it supports {sorted(bits)} bits)")
    if layer.input_scale is not None:
        raise ExportError(f"{name}: the layer divides its input by an AWQ scale that no earlier op absorbed "
                          f"(input_scale); format {fmt!r} cannot store it. Save with format='quantcore'.")
    if layer.act_bits is not None:
        raise ExportError(f"{name}: the layer quantizes its activations (act_bits={layer.act_bits}); format "
                          f"{fmt!r} has no equivalent. Save with format='quantcore'.")


def fp16_scales(name: str, layer: QuantLinear, fmt: str) -> torch.Tensor:
    """The scales as float16, refusing a conversion that would change them."""
    s = layer.scales.cpu()
    if s.dtype == torch.float16:
        return s
    s16 = s.to(torch.float16)
    if not torch.equal(s16.to(s.dtype), s):
        raise ExportError(f"{name}: format {fmt!r} stores float16 scales and this layer's {s.dtype} scales do not "
                          "convert exactly; quantize with scale_dtype=torch.float16")
    return s16


def pack_dim0(values: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 words packing ``values [n, m]`` (uint8) along dim 0: word ``i`` of
    column ``c`` holds value ``i * 32 / bits + j`` at bit ``bits * j`` of the
    columns' little-endian bit stream (GPTQ's 3-bit codes straddle words)."""
    return ops.pack(values.t().contiguous(), bits, 32).t().contiguous()


def unpack_dim0(words: torch.Tensor, bits: int) -> torch.Tensor:
    return ops.unpack(words.t().contiguous(), bits).t().contiguous()


def uniform(layers: List[Tuple[str, QuantLinear]], attr: str, fmt: str):
    """The one value of ``attr`` every layer shares (formats with one global config)."""
    values = {getattr(layer, attr) for _, layer in layers}
    if len(values) != 1:
        raise ExportError(f"format {fmt!r} has one {attr} for the whole model; the layers use {sorted(values)}")
    return values.pop()


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def uniform_group_size(layers: List[Tuple[str, QuantLinear]], fmt: str) -> int:
    """The model's one group size, ``-1`` meaning per channel (whatever each layer's
    width). A layer whose one group spans its input fits either."""
    grouped = {layer.group_size for _, layer in layers if layer.group_size != layer.in_features}
    if len(grouped) > 1:
        raise ExportError(f"format {fmt!r} has one group_size for the whole model; the layers use {sorted(grouped)}")
    group = grouped.pop() if grouped else -1
    for name, layer in layers:
        if layer.group_size != (layer.in_features if group == -1 else group):
            raise ExportError(f"format {fmt!r} has one group_size for the whole model: {name} is per channel "
                              f"({layer.in_features} columns), the others use groups of {group}")
    return group


def names_with(keys, suffix: str) -> List[str]:
    """The layer names of the tensor keys ending in ``.suffix`` (a format's main tensor)."""
    tail = "." + suffix
    return sorted(k[: -len(tail)] for k in keys if k.endswith(tail))
