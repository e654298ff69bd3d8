"""Saving and loading quantized models: quantcore's own format and the
ecosystem's (GPTQ, AWQ, compressed-tensors: ``quantcore.formats``).

A saved directory holds ``model.safetensors`` (or shards with an index),
``config.json`` (the model config plus a ``quantization_config``), and for
Hugging Face models the tokenizer and generation files. In quantcore's format
every tensor of the state dict is stored (shared tensors once) and the config
describes each ``QuantLinear``; the other formats store each layer in their
own layout. Directories are written next to the target and renamed into place,
so a crash never leaves a half-written model under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from safetensors.torch import save_file
from torch import nn

from . import formats
from .checkpoint_io import CONFIG_NAME, WEIGHTS_NAME, TensorSource, read_config, state_mismatch
from ._targets import replace_module
from .config import dtype_from_name
from .nn.quant_linear import QuantLinear, is_conv1d

__all__ = ["save_quantized", "load_quantized", "FORMAT_VERSION", "SAVE_FORMATS"]

#: ``save_quantized(format=...)`` values
SAVE_FORMATS = ("quantcore",) + tuple(formats.FORMATS)

FORMAT_VERSION = 1
QUANT_METHOD = "quantcore"
# Files copied from the source model directory when no tokenizer object is given.
_SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)

PathLike = Union[str, os.PathLike]


def _quantization_config(model: nn.Module) -> Dict[str, Any]:
    modules = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            modules[name] = {
                "in_features": m.in_features, "out_features": m.out_features, "bits": m.bits,
                "group_size": m.group_size, "sym": m.sym, "bias": m.bias is not None,
                "scale_dtype": str(m.scales.dtype).replace("torch.", ""),
                "act_order": m.perm is not None,
                "input_scale": m.input_scale is not None,
                **({"act_bits": m.act_bits, "act_sym": m.act_sym} if m.act_bits is not None else {}),
            }
    if not modules:
        raise ValueError("the model has no QuantLinear layers: run quantcore.quantize_ first")
    return {
        "quant_method": QUANT_METHOD,
        "format_version": FORMAT_VERSION,
        "methods": getattr(model, "_quantcore_configs", {}),
        "modules": modules,
    }


def _dedup_state(model: nn.Module) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """State dict with each shared tensor stored once, plus ``{alias: stored name}``.

    Tied weights (``lm_head.weight`` sharing ``embed_tokens.weight``) are saved
    under their first name in state-dict order and restored for every alias.
    """
    tensors: Dict[str, torch.Tensor] = {}
    aliases: Dict[str, str] = {}
    first_by_storage: Dict[Tuple[int, int, Tuple[int, ...], torch.dtype], str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in first_by_storage:
            aliases[name] = first_by_storage[key]
            continue
        first_by_storage[key] = name
        tensors[name] = t.detach().contiguous().cpu()
    return tensors, aliases


def _write_tree(final: Path, overwrite: bool, fill) -> None:
    """Create ``final`` atomically: fill a sibling temp dir, then rename it into place."""
    final = final.resolve()
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"{final} exists; pass overwrite=True to replace it")
        if not final.is_dir():
            raise NotADirectoryError(f"{final} exists and is not a directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should not be
    try:
        fill(tmp)
        if final.exists():
            trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_quantized(
    model: nn.Module,
    out_dir: PathLike,
    *,
    tokenizer: Any = None,
    overwrite: bool = False,
    format: str = "quantcore",
) -> Path:
    """Save a quantized model to ``out_dir`` (safetensors + ``config.json``).

    ``format``: ``"quantcore"`` (every layer kind we have), ``"gptq"``
    (``checkpoint_format: "gptq"``, zeros stored minus one, what most loaders
    expect), ``"gptq_v2"``, ``"awq"`` (4-bit GEMM) or ``"compressed-tensors"``
    (``pack-quantized``); see ``quantcore.formats``. A layer a format cannot
    store exactly raises ``formats.ExportError`` naming it.

    Hugging Face models get their config (with ``quantization_config``),
    generation config and tokenizer files (from ``tokenizer`` if given, else
    copied from the directory the model was loaded from). Refuses to replace an
    existing directory unless ``overwrite=True``. Returns the directory path.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if format not in SAVE_FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {SAVE_FORMATS}")
    qconfig = format_config(model, format)
    state, aliases = _dedup_state(model)  # other formats: tied tensors once, loaders tie them again
    tensors = format_tensors(model, format, state=state)
    metadata = {"format": "pt"}
    if format == QUANT_METHOD:
        metadata.update(quantcore=str(FORMAT_VERSION), aliases=json.dumps(aliases))
    out = Path(out_dir)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=metadata)
        hf_config = getattr(model, "config", None)
        cfg = {}
        if hf_config is not None and hasattr(hf_config, "to_dict"):
            cfg = hf_config.to_dict()
            # As save_pretrained does: the class to rebuild on load, and the
            # dtype the float parts really have now (model.to() skips the config).
            cfg["architectures"] = [type(model).__name__]
            float_params = [p for p in model.parameters() if p.is_floating_point()]
            if float_params:
                cfg["dtype"] = str(float_params[0].dtype).replace("torch.", "")
                cfg.pop("torch_dtype", None)
        cfg["quantization_config"] = qconfig
        with open(tmp / CONFIG_NAME, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True, default=str)
        gen = getattr(model, "generation_config", None)
        if gen is not None and hasattr(gen, "save_pretrained"):
            gen.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        else:
            src = getattr(hf_config, "_name_or_path", None) if hf_config is not None else None
            if src and os.path.isdir(src):
                for fname in _SIDE_FILES:
                    if os.path.isfile(os.path.join(src, fname)) and not (tmp / fname).exists():
                        shutil.copy2(os.path.join(src, fname), tmp / fname)

    _write_tree(out, overwrite, fill)
    return out.resolve()


def model_from_config(cls: Any, hf_config: Any, dtype: torch.dtype) -> nn.Module:
    """``cls._from_config(hf_config)`` in ``dtype``, across transformers versions."""
    try:
        return cls._from_config(hf_config, dtype=dtype)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        return cls._from_config(hf_config, torch_dtype=dtype)


def format_config(model: nn.Module, fmt: str) -> Dict[str, Any]:
    """``config.json``'s ``quantization_config`` for the model's QuantLinear layers in ``fmt``."""
    if fmt == QUANT_METHOD:
        return _quantization_config(model)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    if not layers:
        raise ValueError("the model has no QuantLinear layers: run quantcore.quantize_ first")
    if fmt == "compressed-tensors":  # it lists the linears left in float
        ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or is_conv1d(m)]
        return formats.FORMATS[fmt].quantization_config(layers, fmt, ignore=ignore)
    if fmt in ("gptq", "gptq_v2"):
        methods = getattr(model, "_quantcore_configs", None) or {}
        awq = methods.get("awq") or {}
        solver = methods.get("gptq") or (awq if awq.get("then_gptq") else None)
        return formats.FORMATS[fmt].quantization_config(layers, fmt, solver=solver)
    return formats.FORMATS[fmt].quantization_config(layers, fmt)


def format_tensors(module: nn.Module, fmt: str, prefix: str = "",
                   state: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The tensors ``module`` is stored as in ``fmt``, keys prefixed with ``prefix``: its
    QuantLinear layers in the format's layout, everything else as in ``state`` (default
    its state dict)."""
    state = module.state_dict() if state is None else state
    if fmt == QUANT_METHOD:
        return {prefix + k: v for k, v in state.items()}
    exporter = formats.FORMATS[fmt]
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, QuantLinear)]
    tensors: Dict[str, torch.Tensor] = {}
    for name, layer in layers:
        tensors.update(exporter.export_layer(prefix + name, layer, fmt))
    inside = tuple(f"{n}." for n, _ in layers)
    tensors.update({prefix + k: v for k, v in state.items() if not k.startswith(inside)})
    return tensors


def _read_quant_config(path: Path) -> Dict[str, Any]:
    cfg = read_config(path)
    qcfg = cfg.get("quantization_config")
    if not isinstance(qcfg, dict):
        raise ValueError(f"{path / CONFIG_NAME} has no quantization_config: not a quantized checkpoint")
    if formats.detect_format(qcfg) == QUANT_METHOD and qcfg.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer quantcore (format {qcfg['format_version']})")
    return cfg


def _build_hf_model(path: Path, cfg: Dict[str, Any], dtype: Optional[torch.dtype]) -> nn.Module:
    """The Hugging Face model ``config.json`` describes, weights allocated but not
    initialized (nothing touches their memory until they are loaded)."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is a test dependency
        raise ImportError("loading a Hugging Face model needs `pip install transformers`") from e
    archs = cfg.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        raise ValueError(f"cannot tell which model class to build from {path / CONFIG_NAME}: architectures="
                         f"{archs!r} names no transformers {transformers.__version__} model class (to load "
                         "other models, pass model= to load_quantized)")
    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception as e:  # transformers raises many types for a config it cannot read
        raise ValueError(f"{path / CONFIG_NAME}: transformers cannot read it: {e}") from None
    if hasattr(hf_config, "quantization_config"):
        del hf_config.quantization_config  # ours, not a transformers quantizer
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    if dtype is None:
        dtype = cfg.get("dtype") or cfg.get("torch_dtype") or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
    with no_init_weights():
        model = model_from_config(cls, hf_config, dtype)
    model.eval()
    return model


def _float_layer(model: nn.Module, name: str, path: Path, dtype: Optional[torch.dtype]) -> Tuple[nn.Module, torch.dtype]:
    """The float layer a quantized one replaces, and the dtype its bias keeps."""
    try:
        original = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{path}: quantized layer {name!r} does not exist in the model") from None
    weight = getattr(original, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.is_floating_point():
        return original, weight.dtype
    return original, dtype or torch.float32


def load_quantized(
    path: PathLike,
    *,
    model: Optional[nn.Module] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: Optional[torch.dtype] = None,
) -> nn.Module:
    """Load a quantized checkpoint directory: quantcore's format, or GPTQ
    (``checkpoint_format`` ``gptq`` / ``gptq_v2``), AWQ (GEMM) or
    compressed-tensors (``pack-quantized``), detected from ``config.json``.

    Hugging Face models are rebuilt from ``config.json``; for any other model
    pass ``model=`` an instance of the float architecture (its weights are
    replaced). Quantized layers come back as ``QuantLinear`` holding exactly the
    stored codes and grids (they run on CPU and CUDA); a quantcore checkpoint
    gives outputs equal to those of the model that was saved.
    """
    path = Path(path)
    cfg = _read_quant_config(path)
    fmt = formats.detect_format(cfg["quantization_config"])
    if model is None:
        model = _build_hf_model(path, cfg, dtype)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if fmt != QUANT_METHOD:
        return _load_external(path, model, cfg["quantization_config"], fmt, dtype).to(device)
    qcfg = cfg["quantization_config"]
    for name, spec in qcfg["modules"].items():
        original, bias_dtype = _float_layer(model, name, path, dtype)
        layer = QuantLinear(
            spec["in_features"], spec["out_features"], bits=spec["bits"], group_size=spec["group_size"],
            sym=spec["sym"], bias=spec["bias"], scale_dtype=dtype_from_name(spec["scale_dtype"]),
            dtype=bias_dtype, act_order=bool(spec.get("act_order", False)),
            input_scale=bool(spec.get("input_scale", False)), act_bits=spec.get("act_bits"),
            act_sym=bool(spec.get("act_sym", True)))
        replace_module(model, name, layer)
    source = TensorSource(path)
    aliases = json.loads(source.metadata().get("aliases", "{}"))
    state = {key: source.get(key) for key in source.keys()}
    for alias, stored in aliases.items():
        state[alias] = state[stored]
    _load_float_state(model, state, path)
    model._quantcore_configs = qcfg.get("methods", {})
    return model.to(device)


def _load_float_state(model: nn.Module, state: Dict[str, torch.Tensor], path: Path, skip: Tuple[str, ...] = ()) -> None:
    """Loads ``state`` into ``model``; keys the checkpoint omits must be tied to loaded ones
    (checkpoints store tied tensors, lm_head = embeddings, once). ``skip``: prefixes of
    layers already built from the checkpoint."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: checkpoint does not match the model: {state_mismatch(e)}") from None
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    missing = [k for k in missing if not k.startswith(skip) and current[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


def _load_external(path: Path, model: nn.Module, qcfg: Dict[str, Any], fmt: str,
                   dtype: Optional[torch.dtype]) -> nn.Module:
    module = formats.FORMATS[fmt]
    source = TensorSource(path)
    names = module.quantized_names(source.keys())
    if not names:
        raise ValueError(f"{path}: the {fmt} checkpoint holds no quantized layers")
    consumed = set()
    for name in names:
        original, layer_dtype = _float_layer(model, name, path, dtype)

        def get(key: str) -> Optional[torch.Tensor]:
            t = source.get(key)
            if t is not None:
                consumed.add(key)
            return t

        layer = module.import_layer(name, get, qcfg, layer_dtype)
        expected = (original.out_features, original.in_features) if isinstance(original, nn.Linear) else None
        if expected is not None and (layer.out_features, layer.in_features) != expected:
            raise ValueError(f"{path}: {name} is [{layer.out_features}, {layer.in_features}] in the checkpoint but "
                             f"[{expected[0]}, {expected[1]}] in the model config")
        replace_module(model, name, layer)
    prefixes = tuple(f"{n}." for n in names)
    state = {k: source.get(k) for k in source.keys() if k not in consumed and not k.startswith(prefixes)}
    unknown = sorted(k for k in source.keys() if k not in consumed and k.startswith(prefixes))
    if unknown:
        raise ValueError(f"{path}: checkpoint does not match the model: unexpected {unknown[:5]}")
    _load_float_state(model, state, path, skip=prefixes)
    return model
