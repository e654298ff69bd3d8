"""Quantizing a Hugging Face checkpoint directory without loading it whole.

``quantize_checkpoint(model_dir, out_dir, config, format=...)`` builds the
model's skeleton with its decoder blocks on the ``meta`` device (no memory),
then for one block at a time: reads its tensors from the memory-mapped
safetensors shards, quantizes its linear layers (RTN directly; GPTQ and AWQ
through their usual layer-by-layer drivers, which call back here to load each
block before calibrating it and to write it out afterwards), writes the
result to the output shards and frees the block. Peak memory is about one
block plus the calibration activations (and, for GPTQ/AWQ, the embeddings
that produce the first block's inputs). Everything else (embeddings, final
norm, an unquantized ``lm_head``) is copied tensor by tensor.

The output goes to a temporary sibling directory renamed into place when
complete; the input is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ._targets import find_targets, output_embedding_names, replace_module
from .calibration import find_decoder_layers
from .checkpoint_io import CONFIG_NAME, ShardWriter, TensorSource, read_config, state_mismatch
from .config import QuantConfig, RTNConfig
from .nn.quant_linear import linear_weight
from .quantize import QuantizationReport, _record_quantization, model_bytes, quantize_, rtn_layer
from .serialization import (_SIDE_FILES, FORMAT_VERSION, SAVE_FORMATS, _build_hf_model, _write_tree,
                            format_config, format_tensors)

__all__ = ["quantize_checkpoint"]

PathLike = Union[str, os.PathLike]


def _return_freed_memory() -> None:
    """Asks glibc to serve large allocations with mmap (returned to the system when
    freed) instead of its heap, which keeps freed blocks: streaming frees one
    decoder block after another, and without this the process still holds them."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: 1 MiB, fixed (no dynamic raise)
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _skeleton(model_dir: Path):
    """The model built from config.json without weights, its shard reader and its decoder layers."""
    cfg = read_hf_config(model_dir)
    _return_freed_memory()
    source = TensorSource(model_dir)
    model = _build_hf_model(model_dir, cfg, None)
    model.config._name_or_path = str(model_dir)
    layers_path, layers = find_decoder_layers(model)
    return cfg, source, model, layers_path, layers


def read_hf_config(model_dir: Path) -> Dict[str, Any]:
    """``config.json`` of a float Hugging Face checkpoint directory, with clear errors."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} is not a directory")
    cfg = read_config(model_dir)
    if "quantization_config" in cfg:
        qcfg = cfg["quantization_config"]
        method = qcfg.get("quant_method") if isinstance(qcfg, dict) else None
        raise ValueError(f"{model_dir} is already quantized (quant_method={method!r}); start from the float "
                         "checkpoint")
    return cfg


class _BlockStream:
    """Loads decoder blocks from the checkpoint on demand and writes them out
    (quantized) once done; GPTQ/AWQ's layer walk calls ``load`` and ``done``."""

    def __init__(self, source: TensorSource, writer: ShardWriter, layers_path: str, layers: nn.ModuleList,
                 fmt: str, target_names: Sequence[str]) -> None:
        self.source, self.writer, self.fmt = source, writer, fmt
        self.layers_path, self.layers = layers_path, layers
        self.targets = set(target_names)
        self.originals: List[nn.Module] = []
        self.release_on_first_load: List[nn.Module] = []
        # Non-persistent buffers (e.g. rotary tables) are not in the checkpoint: keep them.
        self.buffers: List[Dict[str, torch.Tensor]] = []
        for block in layers:
            persistent = set(block.state_dict().keys())
            self.buffers.append({n: b.clone() for n, b in block.named_buffers() if n not in persistent})
            block.to("meta")

    def prefix(self, li: int) -> str:
        return f"{self.layers_path}.{li}."

    def load(self, li: int, block: nn.Module) -> None:
        # The first block loads after the calibration inputs were captured through
        # the embeddings: nothing runs the model as a whole after that.
        for module in self.release_on_first_load:
            module.to("meta")
        self.release_on_first_load = []
        prefix = self.prefix(li)
        block.to_empty(device="cpu")
        with torch.no_grad():
            for name, buf in self.buffers[li].items():
                block.get_buffer(name).copy_(buf)
        state = {k[len(prefix):]: self.source.get(k) for k in self.source.prefix_keys(prefix)}
        try:
            missing, unexpected = block.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ValueError(f"the checkpoint's tensors for {prefix[:-1]} do not match the model config: "
                             f"{state_mismatch(e)}") from None
        if missing or unexpected:
            raise ValueError(f"the checkpoint's tensors for {prefix[:-1]} do not match the model config: missing "
                             f"{[prefix + k for k in missing][:5]}, unexpected {[prefix + k for k in unexpected][:5]}")
        self.originals = []
        for name, module in block.named_modules():
            full = prefix + name
            if full in self.targets:
                self.originals.append(module)
                if not bool(torch.isfinite(linear_weight(module)).all()):
                    raise ValueError(f"{full}: weight contains NaN or Inf")

    def release(self, original: nn.Module) -> None:
        """A float layer that its quantized layer has replaced: free its weights now."""
        original.to("meta")

    def done(self, li: int, block: nn.Module) -> None:
        # The float layers the quantized ones replaced: callers (quantize_'s target
        # list, GPTQ's undo list) still reference them, so free their weights here,
        # before the export makes its temporaries.
        still_in_block = {id(m) for m in block.modules()}
        for module in self.originals:
            if id(module) not in still_in_block:  # one left unquantized is exported as it is
                module.to("meta")
        self.originals = []
        if self.writer is not None:  # None: a read-only walk (statistics only)
            self.writer.add(format_tensors(block, self.fmt, self.prefix(li)))
        block.to("meta")


def quantize_checkpoint(
    model_dir: PathLike,
    out_dir: PathLike,
    config: QuantConfig,
    *,
    format: str = "quantcore",
    calib: Any = None,
    tokenizer: Any = None,
    device: Optional[Union[str, torch.device]] = None,
    include: Optional[Sequence[str]] = None,
    exclude: Optional[Sequence[str]] = None,
    max_shard_bytes: int = 1 << 30,
    overwrite: bool = False,
    progress: bool = True,
) -> Tuple[Path, QuantizationReport]:
    """Quantize the Hugging Face checkpoint in ``model_dir`` (sharded safetensors,
    ``config.json``, tokenizer) into ``out_dir`` in ``format`` (see
    ``save_quantized``), one decoder block in memory at a time. The decoder
    blocks' linear layers are quantized (``include``/``exclude`` patterns narrow
    them); the rest is copied. Tokenizer and generation files are copied.

    Returns the output directory and the quantization report.
    """
    model_dir, out = Path(model_dir), Path(out_dir)
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a quantcore config such as RTNConfig, got {type(config).__name__}")
    if format not in SAVE_FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {SAVE_FORMATS}")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    if format != "quantcore" and getattr(config, "unfolded", None) == "input_scale":
        raise ValueError(f"format {format!r} cannot store AWQ scales that no earlier op absorbs: use "
                         "AWQConfig(unfolded='skip') (as AutoAWQ does) or format='quantcore'")
    if out.resolve() == model_dir.resolve():
        raise ValueError("the output directory must differ from the input")
    if getattr(config, "loss_guard", False) is True:
        raise ValueError("GPTQConfig(loss_guard=True) scores the whole quantized model, which streaming never holds: "
                         "load the model, quantize_() it in memory, then save_quantized()")
    cfg, source, model, layers_path, layers = _skeleton(model_dir)
    targets, skipped = find_targets(model, include, exclude, skip_output_embeddings=True)
    outside = [n for n, _ in targets if not n.startswith(layers_path + ".")]
    if outside:
        raise ValueError(f"streaming quantizes the decoder layers' linears only; exclude {outside[:3]}")
    if not targets:
        raise ValueError("no linear layers to quantize" + (" after include/exclude" if include or exclude else ""))
    report_box: List[QuantizationReport] = []

    def fill(tmp: Path) -> None:
        writer = ShardWriter(tmp, max_shard_bytes,
                             {"format": "pt", "quantcore": str(FORMAT_VERSION)} if format == "quantcore" else None)
        stream = _BlockStream(source, writer, layers_path, layers, format, [n for n, _ in targets])
        rest = [k for k in source.keys() if not k.startswith(layers_path + ".")]
        if isinstance(config, RTNConfig):
            report_box.append(_rtn_blocks(model, stream, targets, config, progress))
        else:
            _prepare_calibration(model, model_dir, source, stream, rest)
            try:
                report_box.append(quantize_(model, config, include=[n for n, _ in targets], calib=calib,
                                            tokenizer=tokenizer, device=device or "cpu", progress=progress))
            finally:
                del model._quantcore_stream
        for key in rest:  # embeddings, final norm, lm_head: unchanged
            writer.add({key: source.get(key)})
        writer.close()
        _write_config(tmp, model, cfg, format)
        for fname in _SIDE_FILES:
            if (model_dir / fname).is_file() and not (tmp / fname).exists():
                shutil.copy2(model_dir / fname, tmp / fname)

    _write_tree(out, True, fill)
    report = report_box[0]
    report.skipped = skipped
    return out.resolve(), report


def _prepare_calibration(model: nn.Module, model_dir: Path, source: TensorSource, stream: _BlockStream,
                         rest: Sequence[str]) -> None:
    """Calibration captures the first block's inputs through the embeddings: load
    the non-block part, one tensor at a time, except the output head (never run),
    and let the layer walk load and free the blocks through ``stream``."""
    heads = tuple(f"{n}." for n in output_embedding_names(model))
    for key in rest:
        if key.startswith(heads):
            continue
        try:
            model.load_state_dict({key: source.get(key)}, strict=False)
        except RuntimeError as e:
            raise ValueError(f"{model_dir}: the checkpoint does not match its config: "
                             f"{state_mismatch(e)}") from None
    stream.release_on_first_load = [m for m in (model.get_input_embeddings(),) if m is not None]
    model._quantcore_stream = stream


def streaming_model(model_dir: PathLike) -> nn.Module:
    """The model of a checkpoint directory set up for a read-only layer walk
    (``calibration.walk_layers``): one decoder block in memory at a time, loaded
    when the walk reaches it and freed after. For statistics such as an imatrix;
    the caller removes ``model._quantcore_stream`` when done."""
    model_dir = Path(model_dir)
    _, source, model, layers_path, layers = _skeleton(model_dir)
    stream = _BlockStream(source, None, layers_path, layers, "", [])
    rest = [k for k in source.keys() if not k.startswith(layers_path + ".")]
    _prepare_calibration(model, model_dir, source, stream, rest)
    return model


def _rtn_blocks(model: nn.Module, stream: _BlockStream, targets, config: RTNConfig,
                progress: bool) -> QuantizationReport:
    start = time.perf_counter()
    report = QuantizationReport(method=config.method, config=config.to_dict(), skipped=[],
                                model_bytes_before=model_bytes(model))
    by_block: Dict[int, List[str]] = {}
    for name, _ in targets:
        li = int(name[len(stream.layers_path) + 1:].split(".", 1)[0])
        by_block.setdefault(li, []).append(name)
    for li in tqdm(range(len(stream.layers)), desc="quantcore rtn (streaming)", disable=not progress, unit="layer"):
        block = stream.layers[li]
        stream.load(li, block)
        for name in by_block.get(li, []):
            original = model.get_submodule(name)
            qlayer, layer_report = rtn_layer(name, original, config)
            report.layers.append(layer_report)
            replace_module(model, name, qlayer)
            stream.release(original)
        stream.done(li, block)
    _record_quantization(model, config)
    report.model_bytes_after = model_bytes(model)
    report.seconds = time.perf_counter() - start
    return report


def _write_config(tmp: Path, model: nn.Module, cfg: Dict[str, Any], fmt: str) -> None:
    out = dict(cfg)
    out["quantization_config"] = format_config(model, fmt)
    (tmp / CONFIG_NAME).write_text(json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")
