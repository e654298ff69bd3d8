"""Hugging Face checkpoint (or model) -> GGUF file that llama.cpp loads, with
llama.cpp's quantization mixtures and, given calibration text, an importance
matrix collected the way llama-imatrix collects it.

The checkpoint is streamed: tensors are read from the shards, transformed,
quantized and written one at a time; the imatrix walk holds one decoder block.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint_io import TensorSource, read_config
from .arch import ArchSpec, arch_for_config
from .container import GGUFWriter, ValueType
from .mixtures import MIXTURES, tensor_type
from .types import GGMLType, QUANTIZED_TYPES
from .vocab import vocab_metadata

__all__ = ["export_gguf", "collect_imatrix", "GGUFExportReport"]

PathLike = Union[str, os.PathLike]


@dataclass
class GGUFExportReport:
    path: Path
    mixture: str
    imatrix: bool
    gptq: bool = False
    tensors: List[Tuple[str, str, Tuple[int, ...], str]] = field(default_factory=list)  # name, type, shape, why
    file_bytes: int = 0
    weight_elements: int = 0
    seconds: float = 0.0

    @property
    def bits_per_weight(self) -> float:
        """File bits per weight element (metadata included)."""
        return 8.0 * self.file_bytes / max(1, self.weight_elements)

    @property
    def fallbacks(self) -> int:
        """How many tensors took a fallback type because their rows do not fit the type's blocks."""
        return sum("fallback" in why for *_, why in self.tensors)

    def summary(self) -> str:
        """One line: file, mixture, size, bits per weight and tensor types."""
        counts: Dict[str, int] = {}
        for _, t, _, _ in self.tensors:
            counts[t] = counts.get(t, 0) + 1
        mix = ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        how = " + GPTQ" if self.gptq else " + imatrix" if self.imatrix else ""
        return (f"wrote {self.path} ({self.mixture}{how}): "
                f"{self.file_bytes / 2**20:.1f} MiB, {self.bits_per_weight:.2f} bits per weight, {len(self.tensors)} "
                f"tensors ({mix}), {self.fallbacks} row-length fallbacks, {self.seconds:.1f} s")


def calibration_walk(model_dir: PathLike, calib: Any, tokenizer: Any, *, n_samples: int, seq_len: int, seed: int,
                     device: Optional[Union[str, torch.device]], progress: bool, desc: str):
    """Runs the decoder layers of a checkpoint on calibration text, one block in
    memory (float, read-only): yields ``(name of the block, block, run_block,
    n_windows)`` as ``calibration.walk_layers`` does."""
    from ..calibration import calibration_windows, compute_device, find_decoder_layers, walk_layers
    from ..streaming import streaming_model

    model_dir = Path(model_dir)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = streaming_model(model_dir)
    try:
        windows = calibration_windows(calib, tokenizer, n_samples, seq_len, seed)
        layers_path, layers = find_decoder_layers(model)
        compute = compute_device(device or "cpu", layers)  # the blocks wait on "meta"
        bar = tqdm(range(len(layers)), desc=desc, disable=not progress, unit="layer")
        with torch.no_grad():
            for li, block, run_block, n_windows in walk_layers(model, layers, windows, compute, bar):
                yield f"{layers_path}.{li}", block, run_block, n_windows
    finally:
        model.__dict__.pop("_quantcore_stream", None)


def run_with_input_hooks(block: nn.Module, prefix: str, run_block, n_windows: int, wanted, accumulate) -> None:
    """Runs every window through ``block`` calling ``accumulate(weight name, x
    [tokens, in_features])`` with the inputs of each linear whose weight name
    (``prefix.<module>.weight``) ``wanted`` accepts."""
    hooks = []
    for name, mod in block.named_modules():
        key = f"{prefix}.{name}.weight"
        if isinstance(mod, nn.Linear) and wanted(key):
            hooks.append(mod.register_forward_pre_hook(
                lambda _m, args, key=key: accumulate(key, args[0].detach().reshape(-1, args[0].shape[-1]))))
    try:
        for i in range(n_windows):
            run_block(i)
    finally:
        for h in hooks:
            h.remove()


def collect_imatrix(model_dir: PathLike, calib: Any, tokenizer: Any = None, *, n_samples: int = 64,
                    seq_len: int = 512, seed: int = 0, device: Optional[Union[str, torch.device]] = None,
                    progress: bool = True) -> Dict[str, torch.Tensor]:
    """llama.cpp's importance matrix: for every linear layer of the decoder
    blocks, the mean over calibration tokens of each input feature's square
    ({checkpoint weight name: float32 [in_features]}). One block in memory."""
    sums: Dict[str, List[Any]] = {}

    def accumulate(key: str, x: torch.Tensor) -> None:
        acc = sums.setdefault(key, [torch.zeros(x.shape[1], dtype=torch.float64), 0])
        acc[0] += x.float().pow(2).sum(0).double().cpu()
        acc[1] += x.shape[0]

    for prefix, block, run_block, n_windows in calibration_walk(
            model_dir, calib, tokenizer, n_samples=n_samples, seq_len=seq_len, seed=seed, device=device,
            progress=progress, desc="quantcore imatrix"):
        run_with_input_hooks(block, prefix, run_block, n_windows, lambda key: True, accumulate)
    return {k: (s / max(n, 1)).float() for k, (s, n) in sums.items()}


def _plan(model_dir: Path, cfg: Dict[str, Any], spec: ArchSpec, source: TensorSource, mixture: str,
          imatrix: bool) -> List[Tuple[str, str, Tuple[int, ...], GGMLType, str]]:
    """(checkpoint name, GGUF name, torch shape, type, why) in llama-quantize's
    order: tensors outside the blocks first, then block by block, by name."""
    entries = []
    for key in source.keys():
        name = spec.tensor_name(key)
        if name is None:
            continue
        entries.append((key, name, tuple(source.shape(key))))
    if not any(n == "token_embd.weight" for _, n, _ in entries):
        raise ValueError(f"{model_dir}: no model.embed_tokens.weight in the checkpoint")
    tied = not any(n == "output.weight" for _, n, _ in entries)
    n_layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    n_gqa = heads // int(cfg.get("num_key_value_heads") or heads)

    def order(e):
        m = re.match(r"^blk\.(\d+)\.", e[1])
        return (int(m.group(1)) if m else -1, e[1])

    plan = []
    for key, name, shape in sorted(entries, key=order):
        ggml_shape = tuple(reversed(shape))
        t, why = tensor_type(mixture, name, ggml_shape, n_layers=n_layers, n_gqa=n_gqa, tied_output=tied,
                             imatrix=imatrix)
        plan.append((key, name, shape, t, why))
    return plan


def _tensor_bytes(t: torch.Tensor, ggml_type: GGMLType, importance: Optional[torch.Tensor]) -> bytes:
    if ggml_type == GGMLType.F32:
        return t.float().contiguous().numpy().tobytes()
    if ggml_type == GGMLType.F16:
        return t.half().contiguous().numpy().tobytes()
    if ggml_type == GGMLType.BF16:
        return t.bfloat16().contiguous().view(torch.int16).numpy().tobytes()
    rows = t.reshape(-1, t.shape[-1])
    return torch.ops.quantcore.gguf_quantize(rows, int(ggml_type), importance).numpy().tobytes()


def export_gguf(
    model_or_dir: Union[PathLike, nn.Module],
    path: PathLike,
    qtype: str = "Q4_K_M",
    *,
    calib: Any = None,
    tokenizer: Any = None,
    n_samples: int = 64,
    seq_len: int = 512,
    seed: int = 0,
    imatrix: Optional[Dict[str, torch.Tensor]] = None,
    gptq: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> GGUFExportReport:
    """Write a GGUF file for llama.cpp from a Hugging Face checkpoint directory
    (streamed) or a float model (with ``tokenizer``; saved to a temporary
    checkpoint first).

    ``qtype``: a llama.cpp mixture (Q2_K, Q3_K_S/M/L, Q4_0, Q4_1, Q4_K_S/M, Q5_0,
    Q5_1, Q5_K_S/M, Q6_K, Q8_0, F16, BF16, F32). ``calib`` (texts, a text file or
    token ids): collect an importance matrix first and weight every quantizer's
    error by it, as ``llama-quantize --imatrix`` does; ``imatrix`` passes one
    already collected ({checkpoint weight name: [in_features]}). ``gptq=True``
    (needs ``calib``): the decoder layers' matrices are quantized block by block
    with GPTQ's error compensation through the inputs' Hessian (see
    ``quantcore.gguf.compensate``), the rest as with an imatrix.

    >>> import quantcore  # doctest: +SKIP
    >>> quantcore.export_gguf("SmolLM2-135M", "smollm2-q4_k_m.gguf", "Q4_K_M", calib="text.txt")  # doctest: +SKIP
    """
    start = time.perf_counter()
    if qtype not in MIXTURES:
        raise ValueError(f"unknown GGUF type {qtype!r}; choose one of {', '.join(MIXTURES)}")
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if isinstance(model_or_dir, nn.Module):
        if tokenizer is None:
            raise ValueError("exporting a model object needs its tokenizer (GGUF files carry the vocabulary)")
        with tempfile.TemporaryDirectory(prefix="quantcore-gguf-") as tmp:
            model_or_dir.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            return export_gguf(tmp, path, qtype, calib=calib, tokenizer=tokenizer, n_samples=n_samples,
                               seq_len=seq_len, seed=seed, imatrix=imatrix, gptq=gptq, device=device,
                               overwrite=overwrite, progress=progress)
    model_dir = Path(model_or_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} is not a directory")
    cfg = read_config(model_dir)
    if "quantization_config" in cfg:
        raise ValueError(f"{model_dir} is already quantized; export the float checkpoint to GGUF")
    spec = arch_for_config(cfg)
    vocab = vocab_metadata(model_dir, cfg.get("vocab_size"))
    source = TensorSource(model_dir)
    if gptq and calib is None:
        raise ValueError("gptq=True needs calibration text (calib=...)")
    if calib is not None and imatrix is None and not gptq:
        imatrix = collect_imatrix(model_dir, calib, tokenizer, n_samples=n_samples, seq_len=seq_len, seed=seed,
                                  device=device, progress=progress)
    plan = _plan(model_dir, cfg, spec, source, qtype, imatrix is not None or gptq)
    mixture = MIXTURES[qtype]
    spill_dir = tempfile.TemporaryDirectory(prefix=".quantcore-gguf-", dir=out.parent if out.parent.exists()
                                            else None)
    compensated: Dict[str, Path] = {}
    if gptq:
        from .compensate import gptq_gguf_tensors

        targets = {key: (t, lambda k, w: spec.transform(k, w, cfg)) for key, name, _, t, _ in plan
                   if t in QUANTIZED_TYPES and name.startswith("blk.")}
        compensated = gptq_gguf_tensors(model_dir, targets, calib, tokenizer, Path(spill_dir.name),
                                        n_samples=n_samples, seq_len=seq_len, seed=seed, device=device,
                                        progress=progress)

    writer = GGUFWriter(out)
    writer.add("general.architecture", spec.name, ValueType.STRING)
    writer.add("general.type", "model", ValueType.STRING)
    name = cfg.get("_model_name_or_path") or cfg.get("_name_or_path") or model_dir.name
    writer.add("general.name", str(Path(str(name)).name if os.sep in str(name) else name), ValueType.STRING)
    writer.add("general.quantization_version", 2, ValueType.UINT32)
    writer.add("general.file_type", int(mixture.file_type), ValueType.UINT32)
    for key, value, vtype, item in spec.hparams(cfg).entries + vocab.entries:
        writer.add(key, value, vtype, item)
    report = GGUFExportReport(out, qtype, imatrix is not None or gptq, gptq=gptq)
    for key, name, shape, t, why in plan:
        writer.add_tensor_info(name, shape, t)
        report.tensors.append((name, t.name, tuple(reversed(shape)), why))
        n = 1
        for d in shape:
            n *= d
        report.weight_elements += n
    try:
        writer.begin()
        bar = tqdm(plan, desc=f"quantcore gguf {qtype}", disable=not progress, unit="tensor")
        for key, name, shape, t, _ in bar:
            if key in compensated:
                writer.write_tensor(name, compensated[key].read_bytes())
                compensated[key].unlink()
                continue
            tensor = spec.transform(key, source.get(key), cfg)
            imp = None
            if imatrix is not None and t in QUANTIZED_TYPES and key in imatrix:
                imp = imatrix[key].float().contiguous()
                if imp.shape != (shape[-1],):
                    raise ValueError(f"imatrix for {key} has shape {tuple(imp.shape)}, expected ({shape[-1]},)")
            writer.write_tensor(name, _tensor_bytes(tensor, t, imp))
            del tensor
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        spill_dir.cleanup()
    report.file_bytes = out.stat().st_size
    report.seconds = time.perf_counter() - start
    return report
