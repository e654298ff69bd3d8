"""GPTQ checkpoints: the AutoGPTQ / GPTQModel layout that transformers, vLLM and
SGLang load.

Per quantized linear ``name`` (``in`` inputs, ``out`` outputs, ``G`` groups):

* ``name.qweight`` int32 ``[in * bits / 32, out]``: codes packed along the input
  dim, value ``j`` of a column at bit ``bits * j`` of the column's little-endian
  bit stream (3-bit codes straddle words);
* ``name.qzeros`` int32 ``[G, out * bits / 32]``: zero points packed along the
  output dim the same way. ``checkpoint_format: "gptq"`` stores zero - 1 and
  loaders add one back; ``"gptq_v2"`` stores the zero itself. Where a zero is
  0, writers and readers of ``"gptq"`` disagree: GPTQModel (what transformers
  loads through) subtracts ``0x11111111`` from whole words (4-bit; a borrow
  runs into the next field), AutoGPTQ per field. We read as GPTQModel does
  (per field for 3-bit, as it does) and refuse to write a zero of 0 in
  ``"gptq"``, so every reader agrees on what we write; ``"gptq_v2"`` stores
  any zero;
* ``name.scales`` float16 ``[G, out]``;
* ``name.g_idx`` int32 ``[in]``: the group of each input column (any order with
  act-order, ``desc_act``);
* ``name.bias`` (when the layer has one).

Weight: ``W[o, i] = (q[i, o] - z[g_idx[i], o]) * s[g_idx[i], o]``. Symmetric
layers store the zero ``2**(bits-1)`` (minus one in ``"gptq"``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from .. import ops
from ..nn.quant_linear import QuantLinear
from ._common import (ExportError, check_exportable, fp16_scales, names_with, original_order_codes, pack_dim0,
                      require, uniform, uniform_group_size, unpack_dim0, zeros_of)

BITS = (2, 3, 4, 8)
SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


def export_layer(name: str, layer: QuantLinear, fmt: str = "gptq") -> Dict[str, torch.Tensor]:
    """The tensors of one layer, keyed ``name.qweight`` etc."""
    check_exportable(name, layer, fmt, BITS)
    bits = layer.bits
    if (layer.out_features * bits) % 32:
        raise ExportError(f"{name}: out_features {layer.out_features} x {bits} bits does not fill whole int32 "
                          "words, which qzeros needs")
    codes, g_idx = original_order_codes(layer)
    zeros = zeros_of(layer).to(torch.int16)
    if fmt == "gptq":  # v1 stores zero - 1
        if bool((zeros == 0).any()):
            raise ExportError(f"{name}: a zero point is 0, which checkpoint_format 'gptq' cannot store (it keeps "
                              "zero - 1); save with format='gptq_v2' or quantize symmetrically")
        zeros = zeros - 1
    out = {
        f"{name}.qweight": pack_dim0(codes.t().contiguous(), bits),
        f"{name}.qzeros": ops.pack(zeros.t().contiguous().to(torch.uint8), bits, 32),
        f"{name}.scales": fp16_scales(name, layer, fmt).t().contiguous(),
        f"{name}.g_idx": (g_idx if g_idx is not None else layer.g_idx.cpu()).to(torch.int32),
    }
    if layer.bias is not None:
        out[f"{name}.bias"] = layer.bias.detach().cpu()
    return out


def quantization_config(layers: List[Tuple[str, QuantLinear]], fmt: str = "gptq",
                        solver: Optional[dict] = None) -> dict:
    """``config.json``'s ``quantization_config`` for these layers (one shared config).

    ``solver``: the settings GPTQ ran with (``GPTQConfig.to_dict()``, or an
    ``AWQConfig`` with ``then_gptq``), recorded as the format's ``static_groups`` /
    ``true_sequential`` / ``damp_percent``; without one (RTN, QAT) those keys
    hold GPTQ's defaults, which readers only show."""
    bits = uniform(layers, "bits", fmt)
    sym = uniform(layers, "sym", fmt)
    solver = solver or {}
    return {
        "quant_method": "gptq",
        "checkpoint_format": fmt,
        "format": fmt,  # optimum and newer GPTQModel read this key
        "pack_dtype": "int32",
        "bits": bits,
        "group_size": uniform_group_size(layers, fmt),
        "desc_act": any(layer.perm is not None for _, layer in layers),
        "sym": bool(sym),
        "static_groups": bool(solver.get("static_groups", False)),
        "true_sequential": bool(solver.get("true_sequential", True)),
        "damp_percent": float(solver.get("percdamp", 0.01)),
        "lm_head": any(name.endswith("lm_head") for name, _ in layers),
        "meta": {"quantizer": ["quantcore"]},
    }


# Per-word constant GPTQModel adds to turn "gptq" qzeros into raw ones (one 1 per field).
_V1_WORD_ONES = {2: 0x55555555, 4: 0x11111111, 8: 0x01010101}


def v1_to_v2_qzeros(qzeros: torch.Tensor, bits: int) -> torch.Tensor:
    """Raw zero points from ``checkpoint_format: "gptq"`` qzeros, as GPTQModel and
    transformers read them: whole-word addition for 2/4/8 bits (exact inverse of
    GPTQModel's writer, borrows included), per field (mod 2**bits) for 3 bits."""
    if bits in _V1_WORD_ONES:
        words = (qzeros.to(torch.int64) + _V1_WORD_ONES[bits]) & 0xFFFFFFFF
        return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)
    stored = ops.unpack(qzeros, bits).to(torch.int16)
    return ops.pack(((stored + 1) & ((1 << bits) - 1)).to(torch.uint8), bits, 32)


def quantized_names(keys) -> List[str]:
    return names_with(keys, "qweight")


def import_layer(name: str, get: Callable[[str], Optional[torch.Tensor]], qcfg: dict,
                 dtype: torch.dtype) -> QuantLinear:
    """The ``QuantLinear`` of ``name`` from its tensors (``get(key)`` or None if absent)."""
    from . import gptq_checkpoint_format

    fmt = gptq_checkpoint_format(qcfg)
    bits = qcfg.get("bits")
    require(bits in BITS, f"GPTQ config: bits must be one of {BITS}, got {bits!r}")
    qweight, qzeros, scales = get(f"{name}.qweight"), get(f"{name}.qzeros"), get(f"{name}.scales")
    require(qzeros is not None and scales is not None, f"{name}: qweight without qzeros/scales")
    require(qweight.dtype == torch.int32 and qweight.dim() == 2, f"{name}.qweight must be a 2-D int32 tensor")
    in_f, out_f = qweight.shape[0] * 32 // bits, qweight.shape[1]
    gs = qcfg.get("group_size", -1)
    gs = in_f if gs in (-1, None) else gs
    require(isinstance(gs, int) and gs > 0 and in_f % gs == 0, f"{name}: group_size {gs} does not divide {in_f}")
    groups = in_f // gs
    require(tuple(qzeros.shape) == (groups, out_f * bits // 32) and qzeros.dtype == torch.int32,
            f"{name}.qzeros must be int32 [{groups}, {out_f * bits // 32}], got {tuple(qzeros.shape)}")
    require(tuple(scales.shape) == (groups, out_f) and scales.is_floating_point(),
            f"{name}.scales must be float [{groups}, {out_f}], got {tuple(scales.shape)}")
    codes = unpack_dim0(qweight, bits).t().contiguous()
    if fmt == "gptq":
        qzeros = v1_to_v2_qzeros(qzeros, bits)
    zeros = ops.unpack(qzeros, bits).t().contiguous()
    g_idx = get(f"{name}.g_idx")
    if g_idx is not None:
        require(tuple(g_idx.shape) == (in_f,), f"{name}.g_idx must be [{in_f}]")
        g_idx = g_idx.to(torch.int64)
        require(bool(((g_idx >= 0) & (g_idx < groups)).all()), f"{name}.g_idx has groups outside [0, {groups})")
        if torch.equal(g_idx, torch.arange(in_f) // gs):
            g_idx = None
    sym = bool(qcfg.get("sym", True))
    zeros_u8 = zeros.to(torch.uint8) if not sym or bool((zeros != (1 << (bits - 1))).any()) else None
    bias = get(f"{name}.bias")
    return QuantLinear.from_codes(codes, scales.t().contiguous(), zeros_u8, bias, bits=bits, group_size=gs,
                                  dtype=dtype, g_idx=g_idx)


def layer_shape(name: str, source, qcfg: dict) -> Tuple[int, int]:
    """``[out, in]`` of a stored layer, from the tensor headers."""
    rows, out_f = source.shape(f"{name}.qweight")
    return out_f, rows * 32 // qcfg.get("bits", 4)
