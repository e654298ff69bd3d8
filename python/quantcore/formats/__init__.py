"""Checkpoint formats of the ecosystem, in and out.

Each format module converts between ``QuantLinear`` (our kernel-side layout)
and the tensors and ``quantization_config`` that other tools read and write:

* ``gptq``: AutoGPTQ / GPTQModel (``checkpoint_format`` ``"gptq"``, zeros stored
  minus one, or ``"gptq_v2"``, raw zeros), as transformers, vLLM and SGLang load it;
* ``awq``: AutoAWQ's GEMM layout (``quant_method: awq``, ``version: gemm``);
* ``compressed-tensors``: llm-compressor's ``pack-quantized`` format.

``quantcore.save_quantized(model, dir, format=...)`` and
``quantcore.load_quantized(dir)`` (the format detected from ``config.json``)
are the entry points; the layouts are documented in each module.
"""

from __future__ import annotations

from . import awq, compressed_tensors, gptq
from ._common import ExportError

#: format name -> module with ``export_layer``, ``quantization_config``, ``quantized_names``,
#: ``import_layer`` and ``layer_shape``
FORMATS = {"gptq": gptq, "gptq_v2": gptq, "awq": awq, "compressed-tensors": compressed_tensors}

__all__ = ["FORMATS", "ExportError", "detect_format", "gptq_checkpoint_format"]


def gptq_checkpoint_format(quantization_config: dict) -> str:
    """``"gptq"`` or ``"gptq_v2"``: GPTQModel writes ``checkpoint_format`` and ``format``,
    optimum only ``format``, AutoGPTQ neither (v1)."""
    fmt = quantization_config.get("checkpoint_format") or quantization_config.get("format") or "gptq"
    return str(fmt).lower()


def detect_format(quantization_config: dict) -> str:
    """The format name of a ``config.json``'s ``quantization_config``."""
    method = quantization_config.get("quant_method")
    if method == "gptq":
        fmt = gptq_checkpoint_format(quantization_config)
        if fmt not in ("gptq", "gptq_v2"):
            raise ValueError(f"unsupported GPTQ checkpoint_format {fmt!r} (quantcore reads 'gptq' and 'gptq_v2')")
        return fmt
    if method in ("awq", "compressed-tensors", "quantcore"):
        return method
    raise ValueError(f"unknown quant_method {method!r} in quantization_config "
                     "(quantcore reads quantcore, gptq, awq and compressed-tensors checkpoints)")
