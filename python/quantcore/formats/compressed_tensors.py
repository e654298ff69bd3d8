"""compressed-tensors checkpoints: the ``pack-quantized`` format that
llm-compressor writes and vLLM loads.

Per quantized linear ``name`` (``in`` inputs, ``out`` outputs, ``G`` groups):

* ``name.weight_packed`` int32 ``[out, ceil(in * bits / 32)]``: the signed codes
  ``q - 2**(bits-1)`` stored offset by ``2**(bits-1)`` (so the unsigned codes),
  packed densely along the input dim, value ``j`` at bit ``bits * j`` of the
  row's little-endian bit stream;
* ``name.weight_scale`` ``[out, G]`` (``G = 1``: per channel);
* ``name.weight_zero_point`` int32 ``[ceil(out * bits / 32), G]``, asymmetric
  only: the signed zero points, offset the same way, packed along dim 0;
* ``name.weight_shape`` int64 ``[2]`` = ``[out, in]``;
* ``name.weight_g_idx`` int32 ``[in]`` with act-order (``actorder: "group"``);
* ``name.bias`` (when the layer has one).

Weight: ``W[o, i] = (q_signed - zp_signed) * s``, which is our
``(q - z) * s`` with ``q``, ``z`` the unsigned values. The
``quantization_config`` has ``format: "pack-quantized"`` and one
``config_groups`` entry with the weights' quantization arguments.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import ops
from ..nn.quant_linear import QuantLinear
from ._common import (check_exportable, names_with, original_order_codes, require, uniform,
                      uniform_group_size, zeros_of)

BITS = (2, 3, 4, 5, 6, 7, 8)
WRITER_VERSION = "0.20.0"  # the compressed-tensors release whose layout this follows


def _pack_rows_padded(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Dense packing along the last dim, zero-padded to whole words (as pack_to_int32)."""
    rows, cols = values.shape
    padded = math.ceil(cols / 32) * 32
    if padded > cols:
        values = torch.cat([values, values.new_zeros(rows, padded - cols)], 1)
    return ops.pack(values.contiguous(), bits, 32)[:, : math.ceil(cols * bits / 32)].contiguous()


def _unpack_rows(words: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    n = words.shape[1]
    whole = math.ceil(n / bits) * bits  # whole blocks of 32 values (bits words each)
    if whole > n:
        words = torch.cat([words, words.new_zeros(words.shape[0], whole - n)], 1)
    return ops.unpack(words.contiguous(), bits)[:, :cols].contiguous()


def export_layer(name: str, layer: QuantLinear, fmt: str = "compressed-tensors") -> Dict[str, torch.Tensor]:
    check_exportable(name, layer, fmt, BITS)
    codes, g_idx = original_order_codes(layer)
    out = {
        f"{name}.weight_packed": _pack_rows_padded(codes, layer.bits),
        f"{name}.weight_scale": layer.scales.detach().cpu().contiguous(),
        f"{name}.weight_shape": torch.tensor([layer.out_features, layer.in_features], dtype=torch.int64),
    }
    if layer.zeros is not None:
        out[f"{name}.weight_zero_point"] = _pack_rows_padded(zeros_of(layer).t().contiguous(), layer.bits).t().contiguous()
    if g_idx is not None:
        out[f"{name}.weight_g_idx"] = g_idx.to(torch.int32)
    if layer.bias is not None:
        out[f"{name}.bias"] = layer.bias.detach().cpu()
    return out


def quantization_config(layers: List[Tuple[str, QuantLinear]], fmt: str = "compressed-tensors",
                        ignore: Optional[List[str]] = None) -> dict:
    """``ignore``: the model's other linear layers (left in float)."""
    bits = uniform(layers, "bits", fmt)
    sym = uniform(layers, "sym", fmt)
    group = uniform_group_size(layers, fmt)
    act_order = {layer.perm is not None for _, layer in layers}
    weights = {
        "num_bits": bits, "type": "int", "symmetric": bool(sym),
        "strategy": "channel" if group == -1 else "group", "group_size": None if group == -1 else group,
        "dynamic": False, "actorder": "group" if True in act_order else None, "observer": "minmax",
        "observer_kwargs": {}, "block_structure": None,
    }
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                      "output_activations": None, "format": "pack-quantized"}},
        "ignore": sorted(ignore or []),
        "kv_cache_scheme": None,
        "sparsity_config": {},
        "global_compression_ratio": None,
        "version": WRITER_VERSION,
    }


def quantized_names(keys) -> List[str]:
    return names_with(keys, "weight_packed")


def _scheme_for(name: str, qcfg: dict) -> dict:
    """The config group whose targets match layer ``name``."""
    fmt = qcfg.get("format", "pack-quantized")
    groups = qcfg.get("config_groups") or {}
    require(isinstance(groups, dict) and groups, "compressed-tensors config has no config_groups")
    chosen = fallback = None
    for group in groups.values():
        require(isinstance(group, dict), "compressed-tensors config_groups entries must be objects")
        for target in group.get("targets", []):
            if (target.startswith("re:") and re.match(target[3:], name)) or target == name or \
                    name.endswith("." + target):
                chosen = group
                break
            if target == "Linear" and fallback is None:
                fallback = group
        if chosen is not None:
            break
    chosen = chosen or fallback
    require(chosen is not None, f"{name}: no config_groups entry targets this layer")
    # Every layer's group is checked: a regex or by-name group may use another format.
    require(chosen.get("format", fmt) == "pack-quantized",
            f"{name}: only the 'pack-quantized' compressed-tensors format is supported, "
            f"not {chosen.get('format', fmt)!r}")
    return chosen


def import_layer(name: str, get: Callable[[str], Optional[torch.Tensor]], qcfg: dict,
                 dtype: torch.dtype) -> QuantLinear:
    group = _scheme_for(name, qcfg)
    w = group.get("weights") or {}
    require(group.get("input_activations") is None,
            f"{name}: activation quantization (input_activations) is not supported by quantcore's loader")
    bits, strategy = w.get("num_bits"), w.get("strategy")
    require(w.get("type", "int") == "int" and bits in BITS, f"{name}: only int weights of 2-8 bits are supported")
    require(strategy in ("channel", "group", "tensor"), f"{name}: unsupported strategy {strategy!r}")
    packed, scale, shape = get(f"{name}.weight_packed"), get(f"{name}.weight_scale"), get(f"{name}.weight_shape")
    require(scale is not None and shape is not None, f"{name}: weight_packed without weight_scale/weight_shape")
    require(shape.numel() == 2, f"{name}.weight_shape must hold [out, in]")
    out_f, in_f = (int(v) for v in shape.tolist())
    require(packed.dtype == torch.int32 and tuple(packed.shape) == (out_f, math.ceil(in_f * bits / 32)),
            f"{name}.weight_packed must be int32 [{out_f}, {math.ceil(in_f * bits / 32)}]")
    if strategy == "group":
        gs = w.get("group_size")
        require(isinstance(gs, int) and gs > 0 and in_f % gs == 0, f"{name}: group_size {gs} does not divide {in_f}")
    else:
        gs = in_f
    groups = in_f // gs
    scale = scale.reshape(-1, 1) if strategy == "tensor" else scale
    if strategy == "tensor":
        scale = scale.expand(out_f, 1).contiguous()
    require(tuple(scale.shape) == (out_f, groups) and scale.is_floating_point(),
            f"{name}.weight_scale must be float [{out_f}, {groups}], got {tuple(scale.shape)}")
    codes = _unpack_rows(packed, bits, in_f)
    zeros = None
    if not w.get("symmetric", True):
        zp = get(f"{name}.weight_zero_point")
        require(zp is not None and zp.dtype == torch.int32, f"{name}: asymmetric layer without packed weight_zero_point")
        zeros = _unpack_rows(zp.t().contiguous(), bits, out_f).t().contiguous()
        require(tuple(zeros.shape) == (out_f, groups), f"{name}.weight_zero_point has the wrong shape")
    g_idx = get(f"{name}.weight_g_idx")
    if g_idx is not None:
        g_idx = g_idx.to(torch.int64)
        require(tuple(g_idx.shape) == (in_f,) and bool(((g_idx >= 0) & (g_idx < groups)).all()),
                f"{name}.weight_g_idx must be [{in_f}] with groups in [0, {groups})")
        if torch.equal(g_idx, torch.arange(in_f) // gs):
            g_idx = None
    return QuantLinear.from_codes(codes, scale, zeros, get(f"{name}.bias"), bits=bits, group_size=gs, dtype=dtype,
                                  g_idx=g_idx)


def layer_shape(name: str, source, qcfg: dict) -> Tuple[int, int]:
    """``[out, in]`` of a stored layer (its ``weight_shape``)."""
    out_f, in_f = (int(v) for v in source.get(f"{name}.weight_shape").tolist())
    return out_f, in_f
