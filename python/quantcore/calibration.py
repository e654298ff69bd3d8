"""Calibration plumbing shared by the layer-by-layer methods (GPTQ, AWQ).

Token windows from text, the model's list of decoder blocks, and the capture
of every block's arguments for each calibration window (so a method can run
one block at a time on stored inputs).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .eval import bos_token_id
from .nn.quant_linear import is_conv1d

__all__ = ["calibration_windows", "find_decoder_layers", "walk_layers", "compute_device", "ForwardInputs"]


# ------------------------------------------------------------------ calibration

def _names_a_file(text: Any) -> bool:
    """A string is read as a file name only when it is one (a long text is not a path)."""
    if not isinstance(text, str) or len(text) > 4096 or "\n" in text:
        return False
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


# Texts longer than this are tokenized in pieces cut at line ends: a tokenizer's
# per-token bookkeeping for a whole book would dwarf the ids it returns.
_TOKENIZE_CHUNK_CHARS = 1 << 22


def _token_ids(tokenizer: Any, text: str) -> torch.Tensor:
    pieces, start = [], 0
    while start < len(text):
        end = len(text) if len(text) - start <= _TOKENIZE_CHUNK_CHARS else text.find("\n", start + _TOKENIZE_CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        pieces.append(tokenizer(text[start:end], return_tensors="pt", add_special_tokens=False).input_ids[0].to(
            torch.int32))
        start = end
    return torch.cat(pieces).long()


def calibration_windows(calib: Any, tokenizer: Any, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """``[n, seq_len]`` token windows drawn (seeded) from text, a file or token ids.

    Windows cut from text start with the tokenizer's BOS when it adds one to
    every text (Gemma, Llama 2), as the model's real inputs do."""
    if isinstance(calib, torch.Tensor):
        if calib.dtype.is_floating_point:
            raise TypeError("calibration token ids must be an integer tensor")
        if calib.dim() == 2 and calib.shape[1] >= seq_len:
            return calib[:n_samples, :seq_len].long()
        ids = calib.reshape(-1).long()
    else:
        if isinstance(calib, Path) or _names_a_file(calib):
            if not Path(calib).is_file():
                raise ValueError(f"calibration file {calib} does not exist")
            calib = Path(calib).read_text(encoding="utf-8")
        if isinstance(calib, str):
            calib = [calib]
        if not isinstance(calib, (list, tuple)) or not calib or not all(isinstance(t, str) for t in calib):
            raise TypeError("calib must be a text, a list of texts, a text file path or a tensor of token ids")
        if tokenizer is None:
            raise ValueError("calibration text needs tokenizer=")
        ids = torch.cat([_token_ids(tokenizer, t) for t in calib])
        bos = bos_token_id(tokenizer)
        if bos is not None:  # windows start as the model's inputs do (Gemma relies on its BOS)
            if ids.numel() < seq_len - 1:
                raise ValueError(f"calibration data has {ids.numel()} tokens, fewer than seq_len={seq_len}")
            g = torch.Generator().manual_seed(seed)
            starts = torch.randint(0, ids.numel() - seq_len + 2, (n_samples,), generator=g)
            return torch.stack([torch.cat([torch.tensor([bos]), ids[s:s + seq_len - 1]]) for s in starts.tolist()])
    if ids.numel() < seq_len:
        raise ValueError(f"calibration data has {ids.numel()} tokens, fewer than seq_len={seq_len}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len + 1, (n_samples,), generator=g)
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()]).long()


# ------------------------------------------------------------- model structure

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "model.language_model.layers")


def find_decoder_layers(model: nn.Module) -> Tuple[str, nn.ModuleList]:
    """The list of decoder blocks: known paths first, else the longest ModuleList
    of identical blocks that contain linear layers."""
    for path in _LAYER_PATHS:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList) and len(mod):
            return path, mod
    best: Optional[Tuple[str, nn.ModuleList]] = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) and len({type(m) for m in mod}) == 1:
            has_linear = any(isinstance(m, nn.Linear) or is_conv1d(m) for m in mod[0].modules())
            if has_linear and (best is None or len(mod) > len(best[1])):
                best = (name, mod)
    if best is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}: layer-wise calibration (GPTQ, AWQ) needs a model "
                         "made of a ModuleList of repeated blocks")
    return best


class _Captured(Exception):
    pass


class _Interner:
    """Keeps one copy of equal tensors: every layer and sample gets the same
    masks and rotary tables, which would otherwise be stored once per use."""

    def __init__(self) -> None:
        self._seen: Dict[tuple, List[torch.Tensor]] = {}

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            bucket = self._seen.setdefault((tuple(obj.shape), obj.dtype, obj.device), [])
            for t in bucket:
                if t is obj or torch.equal(t, obj):
                    return t
            bucket.append(obj)
            return obj
        if isinstance(obj, (tuple, list)):
            return type(obj)(self(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self(v) for k, v in obj.items()}
        return obj


class _Recorder(nn.Module):
    """Stands in for a decoder layer while the model runs once per sample:
    records the layer's arguments and passes the hidden states through, so no
    layer computes anything; the last one stops the forward pass."""

    def __init__(self, layer: nn.Module, sink: list, last: bool) -> None:
        super().__init__()
        object.__setattr__(self, "_layer", layer)  # not a submodule
        self._sink, self._last = sink, last

    def __getattr__(self, name: str) -> Any:  # e.g. Qwen2's `decoder_layer.attention_type`
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_layer"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._sink.append((args, kwargs))
        if self._last:
            raise _Captured
        return args[0] if args else kwargs["hidden_states"]


def _split_hidden(args: tuple, kwargs: dict) -> Tuple[torch.Tensor, tuple, dict]:
    if args:
        return args[0], tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    return kwargs.pop("hidden_states"), (), kwargs


def token_ids_device(model: nn.Module, windows: torch.Tensor) -> torch.device:
    """Where the model's input embedding expects token ids (else where ``windows`` are)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return embed.weight.device if embed is not None and hasattr(embed, "weight") else windows.device


def _capture_layer_inputs(model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor
                          ) -> Tuple[List[torch.Tensor], List[List[Tuple[tuple, dict]]]]:
    """The first layer's hidden states per window, and every layer's other
    arguments per window (attention masks and rotary tables can differ between
    layers, e.g. Gemma's sliding-window and global layers)."""
    sinks: List[list] = [[] for _ in layers]
    originals = list(layers)
    for i, layer in enumerate(originals):
        layers[i] = _Recorder(layer, sinks[i], last=i == len(originals) - 1)
    ids_device = token_ids_device(model, windows)
    try:
        for row in windows:
            try:
                model(row.unsqueeze(0).to(ids_device), use_cache=False)
            except _Captured:
                pass
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    if any(len(s) != len(windows) for s in sinks):
        raise ValueError("calibration could not follow the model's forward pass: not every decoder layer ran once per "
                         "calibration window")
    intern = _Interner()
    hidden = [_split_hidden(*call)[0] for call in sinks[0]]
    rest = [[intern(_split_hidden(*call)[1:]) for call in sink] for sink in sinks]
    return hidden, rest


def _to_device(obj: Any, device: torch.device, memo: Dict[int, Any]) -> Any:
    """Moves tensors inside nested args to ``device``, each distinct tensor once."""
    if isinstance(obj, torch.Tensor):
        if obj.device == device:
            return obj
        if id(obj) not in memo:
            memo[id(obj)] = obj.to(device)
        return memo[id(obj)]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device, memo) for k, v in obj.items()}
    return obj


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _module_device(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def compute_device(device: Any, layers: nn.ModuleList) -> torch.device:
    """Where each decoder layer is calibrated: ``device``, else where the layers are."""
    compute = torch.device(device) if device is not None else _module_device(layers[0])
    if compute.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch.cuda.is_available() is False")
    return compute


def release_replaced(model: nn.Module, original: nn.Module) -> None:
    """Called once ``original`` has been replaced by its quantized layer. When the
    model streams from a checkpoint, its float weights are freed at once (the
    conversion has no use for them, and a failure discards the whole model);
    otherwise it is kept so that a failed quantize_ can put it back."""
    stream = getattr(model, "_quantcore_stream", None)
    if stream is not None:
        stream.release(original)


UNREACHED_NOTE = "not reached by calibration (did not run on the calibration text): quantized with RTN"


def rtn_unreached(model: nn.Module, block: nn.Module, modules: List[Tuple[str, nn.Module]], prefix: str,
                  config: Any, replaced: List[Tuple[nn.Module, str, nn.Module]], notes: Dict[str, str],
                  note: str = UNREACHED_NOTE) -> List[Tuple[str, nn.Module, float, float]]:
    """Round-to-nearest for the linears of ``block`` (named relative to it) that no
    calibration input reached (an MoE expert no token was routed to, a branch the
    text never took), done while the block's weights are loaded: a model streamed
    from a checkpoint frees them when the block is finished. Returns results in the
    drivers' ``(name, layer, rel_err, seconds)`` form (rel_err NaN: nothing to measure)."""
    import time

    from ._targets import replace_module
    from .config import RTNConfig
    from .nn.quant_linear import QuantLinear

    out = []
    for name, module in modules:
        t0 = time.perf_counter()
        qlayer = QuantLinear.from_linear(module, RTNConfig(bits=config.bits, group_size=config.group_size,
                                                           sym=config.sym, scale_dtype=config.scale_dtype))
        replace_module(block, name, qlayer)
        replaced.append((block, name, module))
        release_replaced(model, module)
        notes[prefix + name] = note
        out.append((prefix + name, qlayer, float("nan"), time.perf_counter() - t0))
    return out


def walk_layers(model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor, compute: torch.device,
                bar: Any, float_path: bool = False) -> Iterator[Tuple[int, nn.Module, Callable[[int], Any], int]]:
    """Sequential calibration: yields ``(index, block, run_block, n_windows)`` for
    each decoder layer, moved to ``compute``; ``run_block(i)`` runs the block on
    window i's stored inputs. When the caller resumes, the block (quantized by
    then) produces the next layer's inputs and goes back to its own device.
    ``bar`` iterates over the layer indices (a tqdm bar or a range).

    ``float_path``: also follow the float model. A float copy of each block
    (``run_block.float_block``, one layer's extra memory) is run by
    ``run_block.run_float(i)`` on the float model's own hidden states for window
    i, which advance through the float copies (a second set of hidden states)."""
    hidden, layer_args = _capture_layer_inputs(model, layers, windows)
    hidden = [h.to(compute) for h in hidden]
    float_hidden = list(hidden) if float_path else []
    stream = getattr(model, "_quantcore_stream", None)  # streaming.quantize_checkpoint: blocks load on demand
    for li in bar:
        block = layers[li]
        home = _module_device(block)
        if stream is not None:
            stream.load(li, block)
        block.to(compute)
        memo: Dict[int, Any] = {}
        calls = [_to_device(a, compute, memo) for a in layer_args[li]]

        def run_block(i: int) -> Any:
            rest, kwargs = calls[i]
            return block(hidden[i], *rest, **kwargs)

        if float_path:
            float_block = copy.deepcopy(block)  # before the caller quantizes any of its linears

            def run_float(i: int) -> Any:
                rest, kwargs = calls[i]
                return float_block(float_hidden[i], *rest, **kwargs)

            run_block.float_block, run_block.run_float = float_block, run_float  # type: ignore[attr-defined]

        yield li, block, run_block, len(hidden)
        hidden = [_first_tensor(run_block(i)) for i in range(len(hidden))]
        if float_path:
            float_hidden = [_first_tensor(run_float(i)) for i in range(len(float_hidden))]
            del float_block, run_float
        if stream is not None:
            stream.done(li, block)  # written out, then freed
        block.to(home)


class ForwardInputs:
    """The distinct tensors fed to a block's linears during one forward pass.

    Linears fed the same tensor (q/k/v, gate/up) share statistics. A tensor is
    known by (id, address, shape), and every one is held until ``clear()``: a
    freed input's id and address could otherwise come back for the next
    linear's input (GPT-2's c_proj then c_fc) and pass for the same tensor."""

    def __init__(self) -> None:
        self._owner: Dict[tuple, int] = {}
        self._alive: List[torch.Tensor] = []

    @staticmethod
    def key(x: torch.Tensor) -> tuple:
        return (id(x), x.data_ptr(), tuple(x.shape))

    def owner(self, x: torch.Tensor) -> Optional[int]:
        """id() of the first linear this forward fed x, if any."""
        return self._owner.get(self.key(x))

    def record(self, x: torch.Tensor, module_id: int) -> None:
        self._owner[self.key(x)] = module_id
        self._alive.append(x)

    def clear(self) -> None:
        self._owner.clear()
        self._alive.clear()
