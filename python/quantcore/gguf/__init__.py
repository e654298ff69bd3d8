"""GGUF, llama.cpp's file format.

* Block types: ``torch.ops.quantcore.gguf_quantize`` / ``gguf_dequantize`` (C++,
  identical bytes to ggml's quantizers, with and without an importance matrix).
* The container: ``GGUFWriter`` (streaming, atomic) and ``GGUFReader`` (every
  count, length, offset and type checked against the file).
* ``export_gguf``: Hugging Face checkpoint -> GGUF with llama.cpp's mixtures, an
  imatrix from calibration text, optionally GPTQ compensation across blocks.
* ``load_gguf``: GGUF -> Hugging Face model.
"""

from .container import DEFAULT_ALIGNMENT, GGUFError, GGUFReader, GGUFWriter, TensorInfo, ValueType
from .types import BLOCK_SIZES, QUANTIZED_TYPES, GGMLType, LlamaFileType, row_bytes
from .export import GGUFExportReport, collect_imatrix, export_gguf
from .load import load_gguf
from .mixtures import MIXTURES

__all__ = ["GGUFReader", "GGUFWriter", "GGUFError", "TensorInfo", "ValueType", "GGMLType", "LlamaFileType",
           "BLOCK_SIZES", "QUANTIZED_TYPES", "row_bytes", "DEFAULT_ALIGNMENT", "export_gguf", "collect_imatrix",
           "GGUFExportReport", "load_gguf", "MIXTURES"]
