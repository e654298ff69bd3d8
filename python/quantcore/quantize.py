"""``quantize_``: replace a model's linear layers by ``QuantLinear`` in place."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ._targets import find_targets, replace_module
from .calibration import rtn_unreached
from .config import QuantConfig, RTNConfig
from .nn.quant_linear import QuantLinear, linear_weight

__all__ = ["quantize_", "QuantizationReport", "LayerReport", "model_bytes"]


@dataclass
class LayerReport:
    name: str
    in_features: int
    out_features: int
    bits: int
    group_size: int
    bytes_before: int
    bytes_after: int
    bits_per_weight: float  # codes + scales + zero points, bias excluded
    rel_error: float  # RTN: ||W - dequant(Q)||_F / ||W||_F; GPTQ/AWQ: the same for the outputs on calibration data
    seconds: float = 0.0  # time to quantize this layer (GPTQ/AWQ: its solve, statistics collection excluded)


@dataclass
class QuantizationReport:
    """What ``quantize_`` did: per-layer sizes and errors, totals, time."""

    method: str
    config: Dict[str, Any]
    layers: List[LayerReport] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    model_bytes_before: int = 0
    model_bytes_after: int = 0
    seconds: float = 0.0
    notes: Dict[str, str] = field(default_factory=dict)  # layers whose solver needed a fallback
    scaling: Dict[str, str] = field(default_factory=dict)  # AWQ: where each layer's input scale went
    # GPTQ rtn_guard: {layer: (GPTQ, RTN)} relative output errors on held-out calibration windows
    holdout_errors: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    # GPTQ loss_guard: {"kind@first-last": (loss change with RTN's codes in the group, its SE, kept)}
    loss_guard: Dict[str, Tuple[float, float, bool]] = field(default_factory=dict)

    @property
    def bytes_before(self) -> int:
        """Bytes of the replaced layers' weights (and biases) before quantization."""
        return sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self) -> int:
        """Bytes of the replaced layers after quantization (codes, scales, zeros, permutations)."""
        return sum(layer.bytes_after for layer in self.layers)

    @property
    def bits_per_weight(self) -> float:
        """Average bits per quantized weight (codes + scales + zeros; bias excluded)."""
        n = sum(layer.in_features * layer.out_features for layer in self.layers)
        bits = sum(layer.bits_per_weight * layer.in_features * layer.out_features for layer in self.layers)
        return bits / n if n else 0.0

    @property
    def compression(self) -> float:
        """Whole-model size before over after (0.0 when unknown)."""
        return self.model_bytes_before / self.model_bytes_after if self.model_bytes_after else 0.0

    def to_dict(self) -> Dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "method": self.method, "config": self.config, "seconds": self.seconds,
            "model_bytes_before": self.model_bytes_before, "model_bytes_after": self.model_bytes_after,
            "bits_per_weight": self.bits_per_weight, "skipped": self.skipped, "notes": self.notes,
            "scaling": self.scaling, "holdout_errors": self.holdout_errors, "loss_guard": self.loss_guard,
            "layers": [vars(layer) for layer in self.layers],
        }

    def __str__(self) -> str:
        mb = 1024 * 1024
        worst = max(self.layers, key=lambda layer: layer.rel_error, default=None)
        lines = [
            f"quantcore {self.method}: {len(self.layers)} layers quantized, {len(self.skipped)} kept in float"
            f" ({', '.join(self.skipped[:3])}{'...' if len(self.skipped) > 3 else ''})" if self.skipped else
            f"quantcore {self.method}: {len(self.layers)} layers quantized",
            f"  model size   {self.model_bytes_before / mb:9.2f} MiB -> {self.model_bytes_after / mb:9.2f} MiB"
            f"  ({self.compression:.2f}x smaller)",
            f"  linear size  {self.bytes_before / mb:9.2f} MiB -> {self.bytes_after / mb:9.2f} MiB"
            f"  at {self.bits_per_weight:.3f} bits/weight",
            f"  time         {self.seconds:9.2f} s" + (
                f" ({sum(layer.seconds for layer in self.layers):.2f} s in the solver)"
                if self.method in ("gptq", "awq") else ""),
        ]
        if worst is not None:
            mean = sum(layer.rel_error for layer in self.layers) / len(self.layers)
            what = "output error" if self.method in ("gptq", "awq") else "weight error"
            lines.append(f"  {what} mean {mean:.4f}, worst {worst.rel_error:.4f} ({worst.name})")
        if self.scaling:
            kept = [n for n, where in self.scaling.items() if "input_scale" in where]
            lines.append(f"  AWQ scales   {len(self.scaling) - len(kept)} layers folded into the op before, "
                         f"{len(kept)} kept as input_scale" + (f" ({', '.join(kept[:2])}...)" if kept else ""))
        kept_rtn = sum("kept RTN" in note for note in self.notes.values())
        if kept_rtn:
            lines.append(f"  RTN guard    {kept_rtn} of {len(self.layers)} layers kept round-to-nearest codes "
                         "(lower error on held-out calibration windows)")
        if self.loss_guard:
            kept = [f"{label} ({d:+.5f} +- {se:.5f} nats/token)" for label, (d, se, k) in self.loss_guard.items() if k]
            lines.append(f"  loss guard   {len(self.loss_guard)} groups scored; RTN kept in "
                         + (", ".join(kept) if kept else "none"))
        for name, note in list(self.notes.items())[:5]:
            lines.append(f"  note: {name}: {note}")
        if len(self.notes) > 5:
            lines.append(f"  ... {len(self.notes) - 5} more notes in report.notes")
        return "\n".join(lines)


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and persistent buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + [b for b in model.state_dict(keep_vars=True).values()]:
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def _check_layer(name: str, module: nn.Module, config: QuantConfig) -> Optional[str]:
    w = linear_weight(module)
    out_f, in_f = w.shape
    if w.numel() == 0:
        return f"{name}: empty weight {tuple(w.shape)}"
    if config.group_size > 0 and in_f % config.group_size:
        return f"{name}: in_features {in_f} is not divisible by group_size {config.group_size}"
    if (in_f * config.bits) % 32:
        return f"{name}: in_features {in_f} x {config.bits} bits does not fill whole int32 words"
    if not w.dtype.is_floating_point:
        return f"{name}: weight dtype {w.dtype} is not floating point"
    if w.device.type != "meta" and not bool(torch.isfinite(w).all()):  # streaming checks blocks as they load
        return f"{name}: weight contains NaN or Inf"
    return None


def quantize_(
    model: Union[nn.Module, str, "os.PathLike[str]"],
    config: QuantConfig,
    *,
    include: Optional[Sequence[str]] = None,
    exclude: Optional[Sequence[str]] = None,
    skip_output_embeddings: bool = True,
    progress: bool = True,
    **method_inputs: Any,
) -> QuantizationReport:
    """Quantize ``model`` in place: each ``nn.Linear`` / ``Conv1D`` becomes a ``QuantLinear``.

    Args:
        model: any ``nn.Module``; Hugging Face models are the main use. Or the
            path of a Hugging Face checkpoint directory: it is then quantized
            streaming, one decoder layer in memory at a time, into
            ``out_dir=`` (required) in ``format=`` (default ``"quantcore"``);
            see ``quantcore.streaming.quantize_checkpoint``.
        config: a method config, e.g. ``RTNConfig(bits=4, group_size=128)``.
        include / exclude: module-name patterns (globs such as ``"*.mlp.*"``, or
            ``"re:<regex>"``). Only ``include`` matches are quantized when given.
        skip_output_embeddings: keep ``lm_head`` (the logits layer) in float
            unless ``include`` names it.
        progress: show a tqdm progress bar.
        **method_inputs: what the method needs besides the model. GPTQ and AWQ:
            ``calib`` (texts, a text file, or token ids), ``tokenizer`` (for
            text), ``device`` (where each decoder layer is calibrated, e.g.
            ``"cuda"``; default where the layers are).

    Every target layer is checked (shapes vs group size, NaN/Inf) before any is
    replaced, so a failing call leaves the model untouched.

    >>> import torch, quantcore
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    >>> report = quantcore.quantize_(model, quantcore.RTNConfig(bits=8, group_size=32), progress=False)
    >>> type(model[0]).__name__, len(report.layers)
    ('QuantLinear', 2)
    """
    if isinstance(model, (str, os.PathLike)):
        from .streaming import quantize_checkpoint

        out_dir = method_inputs.pop("out_dir", None)
        if out_dir is None:
            raise ValueError("quantizing a checkpoint directory needs out_dir=: quantize_(model_dir, config, "
                             "out_dir=..., format=...)")
        extra = {k: method_inputs.pop(k) for k in ("format", "max_shard_bytes", "overwrite") if k in method_inputs}
        if not skip_output_embeddings:
            raise ValueError("streaming keeps the output embeddings in float (skip_output_embeddings=True)")
        return quantize_checkpoint(model, out_dir, config, include=include, exclude=exclude, progress=progress,
                                   **extra, **method_inputs)[1]
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a quantcore config such as RTNConfig, got {type(config).__name__}")
    from .awq import AWQConfig, awq_quantize_model
    from .gptq import GPTQConfig, gptq_quantize_model

    if type(config) not in (RTNConfig, GPTQConfig, AWQConfig):
        raise ValueError(f"quantize_ does not support {type(config).__name__} yet")
    calibrated = isinstance(config, (GPTQConfig, AWQConfig))
    allowed = {"calib", "tokenizer", "device"} if calibrated else set()
    unexpected = set(method_inputs) - allowed
    if unexpected:
        raise TypeError(f"unexpected arguments for {config.method}: {sorted(unexpected)}")
    if calibrated and method_inputs.get("calib") is None:
        cls = type(config).__name__
        raise ValueError(f"{config.method.upper()} needs calibration data: "
                         f"quantize_(model, {cls}(...), calib=texts, tokenizer=tok)")

    start = time.perf_counter()
    targets, skipped = find_targets(model, include, exclude, skip_output_embeddings)
    if not targets:
        raise ValueError("the model has no nn.Linear or Conv1D layers to quantize"
                         + (" after include/exclude filtering" if include or exclude else ""))
    problems = [p for p in (_check_layer(n, m, config) for n, m in targets) if p]
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError("cannot quantize:\n  " + "\n  ".join(problems[:10]) + more)

    report = QuantizationReport(method=config.method, config=config.to_dict(), skipped=skipped,
                                model_bytes_before=model_bytes(model))
    if calibrated:
        sizes = {n: sum(p.numel() * p.element_size() for p in m.parameters(recurse=False)) for n, m in targets}
        args = (model, config, targets, method_inputs["calib"], method_inputs.get("tokenizer"), progress)
        if isinstance(config, AWQConfig):
            results, notes, report.scaling = awq_quantize_model(*args, device=method_inputs.get("device"))
        else:
            results, notes, report.holdout_errors, groups = gptq_quantize_model(
                *args, device=method_inputs.get("device"))
            report.loss_guard = {g.label: (g.delta, g.se, g.kept) for g in groups}
        done = {r[0] for r in results}
        results += rtn_unreached(  # linears outside the decoder layers that calibration walks
            model, model, [(n, m) for n, m in targets if n not in done], "", config, [], notes,
            note="not reached by calibration (outside the decoder layers or unused): quantized with RTN")
        for full, qlayer, rel, secs in results:
            report.layers.append(LayerReport(
                name=full, in_features=qlayer.in_features, out_features=qlayer.out_features, bits=qlayer.bits,
                group_size=qlayer.group_size, bytes_before=sizes.get(full, 0), bytes_after=qlayer.storage_bytes(),
                bits_per_weight=qlayer.weight_bits_per_element(), rel_error=rel, seconds=secs))
        report.notes = notes
        _untie_quantized_head(model)
        _record_quantization(model, config)
        report.model_bytes_after = model_bytes(model)
        report.seconds = time.perf_counter() - start
        return report
    replacements = []
    for name, module in tqdm(targets, desc=f"quantcore {config.method}", disable=not progress, unit="layer"):
        qlayer, layer_report = rtn_layer(name, module, config)
        report.layers.append(layer_report)
        replacements.append((name, qlayer))
    for name, qlayer in replacements:
        replace_module(model, name, qlayer)
    _untie_quantized_head(model)
    _record_quantization(model, config)
    report.model_bytes_after = model_bytes(model)
    report.seconds = time.perf_counter() - start
    return report


def rtn_layer(name: str, module: nn.Module, config: QuantConfig) -> Tuple[QuantLinear, LayerReport]:
    """``module`` quantized with round-to-nearest, and its report line (relative weight error)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        try:
            qlayer = QuantLinear.from_linear(module, config)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e
        weight = linear_weight(module).detach()
        deq = qlayer.dequantize(torch.float32).to(weight.device)
        err2 = norm2 = 0.0
        for r in range(0, weight.shape[0], 512):  # blocks of rows: no more weight-sized temporaries
            w = weight[r:r + 512].float()
            err2 += float((deq[r:r + 512] - w).pow(2).sum())
            norm2 += float(w.pow(2).sum())
        rel = (err2 / max(norm2, 1e-60)) ** 0.5
    return qlayer, LayerReport(
        name=name, in_features=qlayer.in_features, out_features=qlayer.out_features, bits=qlayer.bits,
        group_size=qlayer.group_size,
        bytes_before=sum(p.numel() * p.element_size() for p in module.parameters(recurse=False)),
        bytes_after=qlayer.storage_bytes(), bits_per_weight=qlayer.weight_bits_per_element(), rel_error=rel,
        seconds=time.perf_counter() - t0)


def _untie_quantized_head(model: nn.Module) -> None:
    # A quantized lm_head can no longer share the embedding matrix.
    config = getattr(model, "config", None)
    get = getattr(model, "get_output_embeddings", None)
    if config is not None and callable(get) and isinstance(get(), QuantLinear):
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False


def _record_quantization(model: nn.Module, config: QuantConfig) -> None:
    # save_quantized writes the method's settings into config.json; the layers
    # themselves are described from the QuantLinear modules at save time.
    methods = dict(getattr(model, "_quantcore_configs", {}) or {})
    methods[config.method] = config.to_dict()
    model._quantcore_configs = methods
