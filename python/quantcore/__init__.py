"""quantcore: make large language models small and fast.

Quantize a Hugging Face model in place, run it on the fused CPU kernels, save it
and load it back::

    import quantcore
    report = quantcore.quantize_(model, quantcore.RTNConfig(bits=4, group_size=128))
    print(report)
    quantcore.save_quantized(model, "model-w4", tokenizer=tokenizer)
    model = quantcore.load_quantized("model-w4")
"""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before our extension)

from . import _C  # registers torch.ops.quantcore.*
from . import _fake_ops  # noqa: F401
from . import _torch_kernels  # noqa: F401  (ops on devices without native kernels)
from . import ops
from .config import QuantConfig, RTNConfig
from .gptq import GPTQConfig
from .awq import AWQConfig
from .nn import QuantLinear
from . import qat
from . import assets
from .ops import PER_CHANNEL, PER_TENSOR
from .quantize import LayerReport, QuantizationReport, quantize_
from .serialization import load_quantized, save_quantized
from .gguf import export_gguf, load_gguf

__version__ = "0.1.0"

__all__ = [
    "QuantConfig",
    "RTNConfig",
    "GPTQConfig",
    "AWQConfig",
    "QuantLinear",
    "quantize_",
    "QuantizationReport",
    "LayerReport",
    "save_quantized",
    "load_quantized",
    "export_gguf",
    "load_gguf",
    "ops",
    "qat",
    "assets",
    "PER_CHANNEL",
    "PER_TENSOR",
    "cpu_isa",
    "set_cpu_isa",
]


def cpu_isa() -> str:
    """Instruction set the CPU kernels use: ``scalar``, ``avx2``, ``avx512`` or ``avx512_bf16``."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> None:
    """Force the CPU kernels onto one instruction set (e.g. to compare paths)."""
    _C.set_cpu_isa(name)
