"""Quantization configs: one frozen dataclass per method (``quantize_(model, Config)``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict

import torch

__all__ = ["QuantConfig", "RTNConfig"]

_SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _SCALE_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown scale dtype {name!r}; expected one of {sorted(_SCALE_DTYPES)}") from None


@dataclass(frozen=True)
class QuantConfig:
    """Base of all method configs: the integer grid every method produces."""

    method: ClassVar[str] = "base"

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    scale_dtype: torch.dtype = torch.float16

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise TypeError(f"bits must be an int, got {type(self.bits).__name__}")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in [2, 8], got {self.bits}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise TypeError(f"group_size must be an int, got {type(self.group_size).__name__}")
        if self.group_size < -1:
            raise ValueError(
                f"group_size must be > 0, -1 (per channel) or 0 (per tensor), got {self.group_size}")
        if not isinstance(self.sym, bool):
            raise TypeError(f"sym must be a bool, got {type(self.sym).__name__}")
        if self.scale_dtype not in _SCALE_DTYPES.values():
            raise TypeError(f"scale_dtype must be float32, float16 or bfloat16, got {self.scale_dtype}")

    @property
    def granularity(self) -> str:
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        return {0: "tensor", -1: "channel"}.get(self.group_size, "group")

    def to_dict(self) -> Dict[str, Any]:
        """The config as JSON-ready values (dtypes as names), as saved in ``quantization_config``."""
        d = dataclasses.asdict(self)
        d["scale_dtype"] = dtype_name(self.scale_dtype)
        d["method"] = self.method
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "QuantConfig":
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        if "scale_dtype" in kwargs:
            kwargs["scale_dtype"] = dtype_from_name(kwargs["scale_dtype"])
        return cls(**kwargs)


@dataclass(frozen=True)
class RTNConfig(QuantConfig):
    """Round-to-nearest weight quantization, no calibration data needed.

    Args:
        bits: 2-8. The fused CPU kernels cover 4 and 8 bits; other widths run
            through a dequantize-then-matmul fallback.
        group_size: inputs sharing one scale; ``-1`` per output channel, ``0`` per tensor.
        sym: symmetric grid (zero point ``2**(bits-1)``) or asymmetric (learned zero point).
        scale_dtype: storage dtype of the scales (float16 as GPTQ/AWQ checkpoints).
        mse_clip: search a shrink ratio per group that minimises squared error.
        clip_grid, clip_max_shrink: the search grid (ratios ``1 - i/clip_grid``
            down to ``1 - clip_max_shrink``).

    >>> import quantcore
    >>> quantcore.RTNConfig(bits=4, group_size=64).granularity
    'group'
    """

    method: ClassVar[str] = "rtn"

    mse_clip: bool = False
    clip_grid: int = 100
    clip_max_shrink: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip_grid < 1:
            raise ValueError(f"clip_grid must be >= 1, got {self.clip_grid}")
        if not 0.0 <= self.clip_max_shrink < 1.0:
            raise ValueError(f"clip_max_shrink must be in [0, 1), got {self.clip_max_shrink}")
