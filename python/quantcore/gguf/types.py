"""ggml tensor types and llama.cpp file types, as GGUF files number them."""

from __future__ import annotations

import enum
from typing import Dict, Tuple

__all__ = ["GGMLType", "LlamaFileType", "BLOCK_SIZES", "row_bytes", "QUANTIZED_TYPES"]


class GGMLType(enum.IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    BF16 = 30


class LlamaFileType(enum.IntEnum):
    """``general.file_type``: the mixture a file was made with (not a tensor type)."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_BF16 = 32


# (elements per block, bytes per block)
BLOCK_SIZES: Dict[GGMLType, Tuple[int, int]] = {
    GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.BF16: (1, 2),
    GGMLType.Q4_0: (32, 18), GGMLType.Q4_1: (32, 20), GGMLType.Q5_0: (32, 22), GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34), GGMLType.Q2_K: (256, 84), GGMLType.Q3_K: (256, 110), GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176), GGMLType.Q6_K: (256, 210),
}
QUANTIZED_TYPES = frozenset(t for t, (block, _) in BLOCK_SIZES.items() if block > 1)


def row_bytes(ggml_type: GGMLType, n: int) -> int:
    """Bytes of one row of ``n`` elements (``n`` a multiple of the block)."""
    block, size = BLOCK_SIZES[GGMLType(ggml_type)]
    if n % block:
        raise ValueError(f"{GGMLType(ggml_type).name} rows must be a multiple of {block} elements, got {n}")
    return n // block * size
