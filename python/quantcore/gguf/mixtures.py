"""llama.cpp's quantization mixtures: which ggml type each tensor of a model
gets for a file type such as Q4_K_M (llama-quant.cpp's rules for dense
models), and the fallback when a row length does not fit the type's block."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .types import BLOCK_SIZES, GGMLType, LlamaFileType

__all__ = ["MIXTURES", "Mixture", "tensor_type", "is_quantizable", "fallback_type"]

T = GGMLType


@dataclass(frozen=True)
class Mixture:
    name: str
    file_type: LlamaFileType
    default: GGMLType


MIXTURES: Dict[str, Mixture] = {m.name: m for m in (
    Mixture("F32", LlamaFileType.ALL_F32, T.F32),
    Mixture("F16", LlamaFileType.MOSTLY_F16, T.F16),
    Mixture("BF16", LlamaFileType.MOSTLY_BF16, T.BF16),
    Mixture("Q8_0", LlamaFileType.MOSTLY_Q8_0, T.Q8_0),
    Mixture("Q6_K", LlamaFileType.MOSTLY_Q6_K, T.Q6_K),
    Mixture("Q5_K_M", LlamaFileType.MOSTLY_Q5_K_M, T.Q5_K),
    Mixture("Q5_K_S", LlamaFileType.MOSTLY_Q5_K_S, T.Q5_K),
    Mixture("Q5_1", LlamaFileType.MOSTLY_Q5_1, T.Q5_1),
    Mixture("Q5_0", LlamaFileType.MOSTLY_Q5_0, T.Q5_0),
    Mixture("Q4_K_M", LlamaFileType.MOSTLY_Q4_K_M, T.Q4_K),
    Mixture("Q4_K_S", LlamaFileType.MOSTLY_Q4_K_S, T.Q4_K),
    Mixture("Q4_1", LlamaFileType.MOSTLY_Q4_1, T.Q4_1),
    Mixture("Q4_0", LlamaFileType.MOSTLY_Q4_0, T.Q4_0),
    Mixture("Q3_K_L", LlamaFileType.MOSTLY_Q3_K_L, T.Q3_K),
    Mixture("Q3_K_M", LlamaFileType.MOSTLY_Q3_K_M, T.Q3_K),
    Mixture("Q3_K_S", LlamaFileType.MOSTLY_Q3_K_S, T.Q3_K),
    Mixture("Q2_K", LlamaFileType.MOSTLY_Q2_K, T.Q2_K),
)}

_NEVER = ("_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "attn_rel_b.weight")
_LAYER = re.compile(r"^blk\.(\d+)\.")


def is_quantizable(name: str, n_dims: int) -> bool:
    """llama.cpp quantizes only >= 2-D ``*weight`` tensors that are not norms,
    routers and a few other small tables."""
    return (n_dims >= 2 and name.endswith("weight") and not any(s in name for s in _NEVER)
            and name not in ("pos_embd.weight", "token_types.weight"))


def _more_bits(i: int, n: int) -> bool:
    # The first and last eighth of the layers and every third one between.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fallback_type(t: GGMLType, row: int) -> Optional[GGMLType]:
    """The type llama.cpp substitutes when ``row`` is not a multiple of ``t``'s
    block (None when ``t`` fits). Current llama.cpp: Q2_K/Q3_K -> Q4_0, Q4_K ->
    Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; F16 when not even 32 divides the row."""
    if row % BLOCK_SIZES[t][0] == 0:
        return None
    sub = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}.get(t, T.F16)
    return sub if row % BLOCK_SIZES[sub][0] == 0 else T.F16


def tensor_type(mixture: str, name: str, shape: Tuple[int, ...], *, n_layers: int, n_gqa: int = 1,
                tied_output: bool = False, imatrix: bool = False) -> Tuple[GGMLType, str]:
    """The ggml type of tensor ``name`` (GGUF naming, ``shape`` in ggml order,
    row length first) in a ``mixture`` file, and why. ``tied_output``: the file
    has no ``output.weight``, so ``token_embd`` is also the output matrix."""
    mix = MIXTURES[mixture]
    default = mix.default
    if not is_quantizable(name, len(shape)) or default in (T.F32, T.F16, T.BF16):
        keep = T.F32 if len(shape) < 2 or name.endswith("_norm.weight") else default
        return keep, "not quantized" if keep == T.F32 else "float file"
    row = shape[0]
    m = _LAYER.match(name)
    layer = int(m.group(1)) if m else -1
    reason = "default"
    if name == "output.weight" or (tied_output and name == "token_embd.weight"):
        # The output matrix gets Q6_K in every k-quant and legacy mixture below Q8_0.
        if row % BLOCK_SIZES[default][0]:
            t, reason = T.Q8_0, "output: row does not fit the default block"
        elif default == T.Q8_0:
            t = T.Q8_0
        else:
            t, reason = T.Q6_K, "output matrix"
    elif name == "token_embd.weight":
        t = default
    elif ".attn_v.weight" in name:
        t = {
            "Q2_K": T.Q4_K if n_gqa >= 4 else T.Q3_K,
            "Q3_K_M": T.Q5_K if layer < 2 else T.Q4_K,
            "Q3_K_L": T.Q5_K,
            "Q4_K_M": T.Q6_K if _more_bits(layer, n_layers) else default,
            "Q5_K_M": T.Q6_K if _more_bits(layer, n_layers) else default,
            "Q4_K_S": T.Q5_K if layer < 4 else T.Q4_K,
        }.get(mixture, default)
        reason = "attn_v" if t != default else reason
    elif ".ffn_down" in name:
        t = {
            "Q2_K": T.Q3_K,
            "Q3_K_M": T.Q5_K if layer < n_layers // 16 else T.Q4_K,
            "Q3_K_L": T.Q5_K,
            "Q4_K_M": T.Q6_K if _more_bits(layer, n_layers) else T.Q4_K,
            "Q5_K_M": T.Q6_K if _more_bits(layer, n_layers) else T.Q5_K,
            "Q4_K_S": T.Q5_K if layer < n_layers // 8 else T.Q4_K,
            "Q4_0": T.Q4_1 if imatrix and layer < n_layers // 8 else T.Q4_0,
            "Q5_0": T.Q5_1 if imatrix and layer < n_layers // 8 else T.Q5_0,
        }.get(mixture, default)
        reason = "ffn_down" if t != default else reason
    elif ".attn_output.weight" in name:
        t = {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}.get(mixture, default)
        reason = "attn_output" if t != default else reason
    else:
        t = default
    fb = fallback_type(t, row)
    if fb is not None:
        return fb, f"{reason}; row of {row} does not fit {t.name} blocks: fallback"
    return t, reason
