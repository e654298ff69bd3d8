"""GPTQ-style error compensation for ggml block types: the columns of a weight
are quantized one ggml block at a time (32 or 256 columns, llama.cpp's own
quantizer weighted by the Hessian's diagonal), and each block's rounding error
is pushed onto the columns not yet quantized through the inverse Hessian of the
layer's inputs, as GPTQ does column by column.

For a block S quantized jointly with error E = W_S - Q_S, the optimal change
of the remaining columns R under the quadratic error tr(D H D^T) is
W_R -= E U_SS^-1 U_SR, with H^-1 = U^T U (U upper triangular): GPTQ's lazy
batch update with the whole block's codes fixed at once. The ggml layout
forbids reordering columns, so there is no act-order.
"""

from __future__ import annotations

import warnings

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .types import BLOCK_SIZES, GGMLType, QUANTIZED_TYPES

__all__ = ["gptq_quantize_blocks", "gptq_gguf_tensors"]


def gptq_quantize_blocks(weight: torch.Tensor, hessian: torch.Tensor, ggml_type: GGMLType,
                         percdamp: float = 0.01) -> torch.Tensor:
    """uint8 [rows, bytes per row]: ``weight`` [rows, cols] in ``ggml_type``
    blocks, each block's error compensated on the later columns. ``hessian``
    [cols, cols] = 2/n X^T X of the layer's inputs; its diagonal (mean x^2 up
    to a factor 2) is also the importance vector of the block quantizer."""
    ggml_type = GGMLType(ggml_type)
    if ggml_type not in QUANTIZED_TYPES:
        raise ValueError(f"{ggml_type.name} is not a block type")
    block = BLOCK_SIZES[ggml_type][0]
    W = weight.detach().float().clone()
    rows, cols = W.shape
    if cols % block:
        raise ValueError(f"{cols} columns are not a multiple of {ggml_type.name}'s block of {block}")
    H = hessian.detach().float().clone()
    if H.shape != (cols, cols) or not bool(torch.isfinite(H).all()):
        raise ValueError(f"hessian must be a finite [{cols}, {cols}] matrix")
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1.0
    W[:, dead] = 0.0
    importance = (hessian.diagonal().float() / 2).clamp_min(0).contiguous()
    damp = percdamp * float(H.diagonal().mean())
    U = None
    for extra in range(11):  # more damping until H is positive definite, as the GPTQ solver does
        try:
            U = torch.ops.quantcore.gptq_inverse_factor(H, damp * (1 + extra), 256)
            break
        except ValueError:
            continue
    if U is None:
        warnings.warn(f"GGUF GPTQ compensation: the Hessian stayed singular after 11 damping steps; "
                      f"this {rows}x{cols} tensor is quantized with its importance weights only", RuntimeWarning)
    out: List[torch.Tensor] = []
    for c0 in range(0, cols, block):
        c1 = c0 + block
        codes = torch.ops.quantcore.gguf_quantize(W[:, c0:c1].contiguous(), int(ggml_type),
                                                  importance[c0:c1].contiguous())
        out.append(codes)
        if U is None or c1 >= cols:
            continue
        err = W[:, c0:c1] - torch.ops.quantcore.gguf_dequantize(codes, int(ggml_type), block)
        scaled = torch.linalg.solve_triangular(U[c0:c1, c0:c1], err, upper=True, left=False)  # E U_SS^-1
        W[:, c1:].sub_(scaled @ U[c0:c1, c1:])
    return torch.cat(out, dim=1)


def gptq_gguf_tensors(model_dir: Path, targets: Dict[str, Tuple[GGMLType, Any]], calib: Any, tokenizer: Any,
                      spill: Path, *, n_samples: int, seq_len: int, seed: int,
                      device: Optional[Union[str, torch.device]], progress: bool) -> Dict[str, Path]:
    """Walks the decoder layers of ``model_dir`` (one in memory) on calibration
    text; for each checkpoint weight in ``targets`` ({name: (type, transform)}),
    accumulates its inputs' Hessian, quantizes the transformed weight with
    ``gptq_quantize_blocks`` and writes the bytes to ``spill``. Returns
    {name: file}."""
    from .export import calibration_walk, run_with_input_hooks

    files: Dict[str, Path] = {}
    for prefix, block, run_block, n_windows in calibration_walk(
            model_dir, calib, tokenizer, n_samples=n_samples, seq_len=seq_len, seed=seed, device=device,
            progress=progress, desc="quantcore gguf gptq"):
        hess: Dict[str, List[Any]] = {}

        def accumulate(key: str, x: torch.Tensor) -> None:
            acc = hess.setdefault(key, [torch.zeros(x.shape[1], x.shape[1], device=x.device), 0])
            acc[1] = torch.ops.quantcore.gptq_hessian_update(acc[0], x.float(), acc[1])

        run_with_input_hooks(block, prefix, run_block, n_windows, lambda key: key in targets, accumulate)
        for name, mod in block.named_modules():
            key = f"{prefix}.{name}.weight"
            if key not in hess:
                continue
            ggml_type, transform = targets[key]
            w = transform(key, mod.weight.detach().float().cpu())
            codes = gptq_quantize_blocks(w, hess[key][0].cpu(), ggml_type)
            path = spill / f"{len(files)}.bin"
            path.write_bytes(codes.numpy().tobytes())
            files[key] = path
    return files
