"""GGUF: llama.cpp's file format. Block types (C++ kernels), the container
(streaming writer, hardened reader)."""

from .container import DEFAULT_ALIGNMENT, GGUFError, GGUFReader, GGUFWriter, TensorInfo, ValueType
from .types import BLOCK_SIZES, QUANTIZED_TYPES, GGMLType, LlamaFileType, row_bytes

__all__ = ["GGUFReader", "GGUFWriter", "GGUFError", "TensorInfo", "ValueType", "GGMLType", "LlamaFileType",
           "BLOCK_SIZES", "QUANTIZED_TYPES", "row_bytes", "DEFAULT_ALIGNMENT"]

from .export import GGUFExportReport, collect_imatrix, export_gguf  # noqa: E402
from .load import load_gguf  # noqa: E402

__all__ += ["export_gguf", "collect_imatrix", "GGUFExportReport", "load_gguf"]
