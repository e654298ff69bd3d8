"""AWQ checkpoints: AutoAWQ's GEMM layout (``quant_method: awq``, ``version:
gemm``), which transformers, vLLM and SGLang load.

Per quantized linear ``name`` (4-bit only, ``G`` groups):

* ``name.qweight`` int32 ``[in, out / 8]``: packed along the *output* dim; word
  ``k`` of a row holds columns ``8k .. 8k+7`` with column ``8k + ORDER[p]`` in
  nibble ``p`` (bits ``4p .. 4p+3``), ``ORDER = [0, 2, 4, 6, 1, 3, 5, 7]``;
* ``name.qzeros`` int32 ``[G, out / 8]``: zero points, packed the same way, raw;
* ``name.scales`` float16 ``[G, out]``;
* ``name.bias`` (when the layer has one).

Weight: ``W[o, i] = (q[i, o] - z[i // group, o]) * s[i // group, o]``. No
act-order. AutoAWQ always stores zero points (``zero_point: true``);
symmetric layers store ``8``.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import ops
from ..nn.quant_linear import QuantLinear
from ._common import (ExportError, check_exportable, fp16_scales, names_with, original_order_codes, require,
                      uniform_group_size, zeros_of)

ORDER = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
INVERSE_ORDER = torch.argsort(ORDER)  # [0, 4, 1, 5, 2, 6, 3, 7]


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """``[rows, cols]`` uint8 4-bit values -> int32 ``[rows, cols / 8]`` in AWQ's nibble order."""
    rows, cols = values.shape
    interleaved = values.view(rows, cols // 8, 8)[:, :, ORDER].reshape(rows, cols)
    return ops.pack(interleaved.contiguous(), 4, 32)


def unpack_columns(words: torch.Tensor) -> torch.Tensor:
    rows = words.shape[0]
    interleaved = ops.unpack(words, 4)
    return interleaved.view(rows, -1, 8)[:, :, INVERSE_ORDER].reshape(rows, -1).contiguous()


def export_layer(name: str, layer: QuantLinear, fmt: str = "awq") -> Dict[str, torch.Tensor]:
    check_exportable(name, layer, fmt, (4,))
    if layer.perm is not None:
        raise ExportError(f"{name}: act-order layers (GPTQ desc_act) cannot be stored in format 'awq'; "
                          "use format='gptq'")
    if layer.out_features % 8:
        raise ExportError(f"{name}: format 'awq' packs 8 outputs per int32; out_features {layer.out_features}")
    codes, _ = original_order_codes(layer)
    out = {
        f"{name}.qweight": pack_columns(codes.t().contiguous()),
        f"{name}.qzeros": pack_columns(zeros_of(layer).t().contiguous()),
        f"{name}.scales": fp16_scales(name, layer, fmt).t().contiguous(),
    }
    if layer.bias is not None:
        out[f"{name}.bias"] = layer.bias.detach().cpu()
    return out


def quantization_config(layers: List[Tuple[str, QuantLinear]], fmt: str = "awq") -> dict:
    group = uniform_group_size(layers, fmt)
    return {
        "quant_method": "awq",
        "version": "gemm",
        "bits": 4,
        "group_size": group,
        "zero_point": True,
        "modules_to_not_convert": None,
    }


def quantized_names(keys) -> List[str]:
    return names_with(keys, "qweight")


def import_layer(name: str, get: Callable[[str], Optional[torch.Tensor]], qcfg: dict,
                 dtype: torch.dtype) -> QuantLinear:
    bits = qcfg.get("bits", qcfg.get("w_bit", 4))
    require(bits == 4, f"AWQ config: only 4-bit GEMM checkpoints are supported, got bits={bits!r}")
    version = str(qcfg.get("version", "gemm")).lower()
    require(version == "gemm", f"AWQ config: only version 'gemm' is supported, got {version!r}")
    qweight, qzeros, scales = get(f"{name}.qweight"), get(f"{name}.qzeros"), get(f"{name}.scales")
    require(qzeros is not None and scales is not None, f"{name}: qweight without qzeros/scales")
    require(qweight.dtype == torch.int32 and qweight.dim() == 2, f"{name}.qweight must be a 2-D int32 tensor")
    in_f, out_f = qweight.shape[0], qweight.shape[1] * 8
    gs = qcfg.get("group_size", qcfg.get("q_group_size", 128))
    gs = in_f if gs in (-1, None) else gs
    require(isinstance(gs, int) and gs > 0 and in_f % gs == 0, f"{name}: group_size {gs} does not divide {in_f}")
    groups = in_f // gs
    require(tuple(qzeros.shape) == (groups, out_f // 8) and qzeros.dtype == torch.int32,
            f"{name}.qzeros must be int32 [{groups}, {out_f // 8}], got {tuple(qzeros.shape)}")
    require(tuple(scales.shape) == (groups, out_f) and scales.is_floating_point(),
            f"{name}.scales must be float [{groups}, {out_f}], got {tuple(scales.shape)}")
    codes = unpack_columns(qweight).t().contiguous()
    zeros = unpack_columns(qzeros).t().contiguous()
    return QuantLinear.from_codes(codes, scales.t().contiguous(), zeros, get(f"{name}.bias"), bits=4, group_size=gs,
                                  dtype=dtype)


def layer_shape(name: str, source, qcfg: dict) -> Tuple[int, int]:
    """``[out, in]`` of a stored layer, from the tensor headers."""
    in_f, words = source.shape(f"{name}.qweight")
    return words * 8, in_f
