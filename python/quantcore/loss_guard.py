"""GPTQ's loss guard: a model-level check of the layer-wise solutions.

GPTQ minimises each linear's output error on calibration inputs. That objective
can disagree with the model's loss: on Gemma-3-270M at 8 bits, GPTQ's codes in
the last third's down projections lower every layer-wise error yet raise the
next-token loss (benchmarks/RESULTS.md, "Which layers, and what the layer-wise
objective misses"). The guard scores the quantized model's next-token loss on
calibration windows with round-to-nearest codes swapped into one group of
linears at a time (a projection, e.g. ``mlp.down_proj``, in one contiguous
range of decoder layers) and keeps RTN in the groups where that lowers the loss
clearly.

Only the layers from a group's first range on are re-run: the hidden states at
each range boundary are cached by one pass of the GPTQ model. The model's own
forward computes the loss from the last layer's output (embeddings, final norm
and head as the model defines them), with the decoder layers replaced by
stand-ins that replay stored hidden states.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ._targets import replace_module
from .calibration import _capture_layer_inputs, _first_tensor, _module_device, _to_device
from .nn.quant_linear import QuantLinear

__all__ = ["GroupScore", "loss_guard", "LOSS_GUARD_Z"]

# A group keeps RTN when RTN lowers the mean loss by more than this many standard
# errors (paired over windows). With ~20 groups scored, 3 keeps the chance of a
# false pick at a few percent (one-sided 0.13% per group); the group that closes
# Gemma-3-270M's W8 gap scored 4.5 on 24 windows.
LOSS_GUARD_Z = 3.0


@dataclass
class GroupScore:
    """One group's result: ``delta`` = mean loss (nats/token) with RTN's codes in
    the group minus with GPTQ's, ``se`` its standard error over windows."""

    kind: str
    first_layer: int
    stop_layer: int  # exclusive
    names: List[str]
    delta: float = float("nan")
    se: float = float("nan")
    kept: bool = False

    @property
    def label(self) -> str:
        return f"{self.kind}@{self.first_layer}-{self.stop_layer - 1}"


def linear_kind(relative_name: str) -> str:
    """The projection a linear is, from its name inside a decoder layer; expert
    indices become ``*`` so that all experts of a projection form one kind."""
    return re.sub(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)", "*", relative_name)


def layer_ranges(n_layers: int, n_ranges: int) -> List[Tuple[int, int]]:
    """``n_ranges`` contiguous, nearly equal ranges of layer indices (fewer when
    there are fewer layers)."""
    n = max(1, min(n_ranges, n_layers))
    bounds = [round(i * n_layers / n) for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


class _Replay(nn.Module):
    """Stands in for a decoder layer during the loss pass: passes the hidden
    states through, or (the last layer) returns the stored output for the
    current window, shaped as the real layer's output."""

    def __init__(self, layer: nn.Module, wrap: Optional[Any], final: Optional[List[torch.Tensor]],
                 cursor: List[int]) -> None:
        super().__init__()
        object.__setattr__(self, "_layer", layer)  # not a submodule: model.to() must not move it
        self._wrap, self._final, self._cursor = wrap, final, cursor

    def __getattr__(self, name: str) -> Any:  # attributes the model reads from its layers
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_layer"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if self._final is not None:
            hidden = self._final[self._cursor[0]].to(hidden.device)
        return hidden if self._wrap is None else self._wrap(hidden)


def _output_wrapper(sample: Any) -> Optional[Any]:
    """How a layer's output is shaped: None for a bare tensor, else a function
    that puts a hidden-states tensor where the real output had its own."""
    if isinstance(sample, (tuple, list)):
        rest = tuple(sample[1:])
        return lambda h: type(sample)((h,) + rest)
    return None


class _LossPass:
    """Runs the decoder layers on stored inputs of the scored windows, and the
    model's own forward for the loss."""

    def __init__(self, model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor, compute: torch.device):
        self.model, self.layers, self.windows, self.compute = model, layers, windows, compute
        hidden, self.layer_args = _capture_layer_inputs(model, layers, windows)
        self.first_hidden = [h.to(compute) for h in hidden]
        self.wrap: Optional[Any] = None
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.ids_device = embed.weight.device if embed is not None and hasattr(embed, "weight") else windows.device

    @torch.no_grad()
    def run_layers(self, start: int, hidden: List[torch.Tensor],
                   keep: Sequence[int] = ()) -> Tuple[List[torch.Tensor], Dict[int, List[torch.Tensor]]]:
        """Layers ``start..`` on ``hidden`` (the inputs of layer ``start``); returns
        the last layer's outputs and the inputs of the layers named in ``keep``."""
        kept: Dict[int, List[torch.Tensor]] = {}
        for li in range(start, len(self.layers)):
            if li in keep:
                kept[li] = hidden
            block = self.layers[li]
            home = _module_device(block)
            block.to(self.compute)
            memo: Dict[int, Any] = {}
            calls = [_to_device(a, self.compute, memo) for a in self.layer_args[li]]
            outs = []
            for i, (rest, kwargs) in enumerate(calls):
                out = block(hidden[i], *rest, **kwargs)
                if li == len(self.layers) - 1 and i == 0:
                    self.wrap = _output_wrapper(out)
                outs.append(_first_tensor(out))
            hidden = outs
            block.to(home)
        return hidden, kept

    @torch.no_grad()
    def window_losses(self, final: List[torch.Tensor]) -> torch.Tensor:
        """Mean next-token loss of each scored window, given the last layer's outputs."""
        originals = list(self.layers)
        cursor = [0]
        for i, layer in enumerate(originals):
            last = i == len(originals) - 1
            self.layers[i] = _Replay(layer, self.wrap, final if last else None, cursor)
        moved = _tail_home(self.model, self.compute)
        losses = []
        try:
            for i, row in enumerate(self.windows):
                cursor[0] = i
                ids = row.unsqueeze(0).to(self.compute if moved is not None else self.ids_device)
                out = self.model(ids, use_cache=False)
                logits = getattr(out, "logits", None)
                if logits is None:
                    logits = _first_tensor(out) if isinstance(out, (tuple, list)) else out
                if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != ids.shape:
                    raise ValueError("the model's forward does not return logits [batch, seq, vocab]")
                target = ids[0, 1:].to(logits.device)
                losses.append(float(torch.nn.functional.cross_entropy(logits[0, :-1].float(), target)))
        finally:
            for i, layer in enumerate(originals):
                self.layers[i] = layer
            if moved is not None:
                self.model.to(moved)
        return torch.tensor(losses, dtype=torch.float64)


def _tail_home(model: nn.Module, compute: torch.device) -> Optional[torch.device]:
    """Moves the model's parts outside the decoder layers (which are stand-ins by
    now) to ``compute`` when they all sit on one other device; returns that
    device to move them back to, or None when they stay where they are."""
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    if len(devices) != 1:
        return None
    home = next(iter(devices))
    if home == compute:
        return None
    model.to(compute)
    return home


def _paired(values: torch.Tensor, base: torch.Tensor) -> Tuple[float, float]:
    d = values - base
    se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("inf")
    return float(d.mean()), se


def loss_guard(model: nn.Module, layers: nn.ModuleList, layers_path: str, windows: torch.Tensor,
               compute: torch.device, alternatives: Dict[str, nn.Module], n_ranges: int, progress: bool,
               z: float = LOSS_GUARD_Z) -> List[GroupScore]:
    """Scores RTN's codes group by group on ``windows`` and swaps them in where
    they lower the model's loss by more than ``z`` standard errors.

    ``alternatives``: {full linear name: its RTN layer}; a linear whose quantized
    layer already *is* that module (kept RTN by ``rtn_guard``) adds nothing to a
    group. Returns every scored group; those with ``kept`` are in the model."""
    ranges = layer_ranges(len(layers), n_ranges)
    groups: Dict[Tuple[str, int], GroupScore] = {}
    for ri, (a, b) in enumerate(ranges):
        for li in range(a, b):
            for rel, module in layers[li].named_modules():
                full = f"{layers_path}.{li}.{rel}"
                alt = alternatives.get(full)
                if not isinstance(module, QuantLinear) or alt is None or alt is module:
                    continue
                kind = linear_kind(rel)
                groups.setdefault((kind, ri), GroupScore(kind, a, b, [])).names.append(full)
    scores = sorted(groups.values(), key=lambda g: (g.first_layer, g.kind))
    if not scores:
        return []

    with torch.no_grad():
        runner = _LossPass(model, layers, windows, compute)
        starts = sorted({g.first_layer for g in scores})
        final, boundary = runner.run_layers(0, runner.first_hidden, keep=starts)
        base = runner.window_losses(final)

        def swapped(names: Sequence[str]) -> List[Tuple[str, nn.Module]]:
            originals = [(n, model.get_submodule(n)) for n in names]
            for n in names:
                replace_module(model, n, alternatives[n])
            return originals

        def score(names: Sequence[str], start: int) -> torch.Tensor:
            originals = swapped(names)
            try:
                out, _ = runner.run_layers(start, boundary[start])
                return runner.window_losses(out)
            finally:
                for n, m in originals:
                    replace_module(model, n, m)

        for g in tqdm(scores, desc="quantcore loss guard", disable=not progress, unit="group"):
            g.delta, g.se = _paired(score(g.names, g.first_layer), base)

        picks = [g for g in scores if g.delta < 0 and g.delta < -z * g.se]
        if len(picks) > 1:
            # Groups interact: keep them all only if together they beat the best one alone.
            best = min(picks, key=lambda g: g.delta)
            together, _ = _paired(score([n for g in picks for n in g.names], min(g.first_layer for g in picks)), base)
            if together >= best.delta:
                picks = [best]
        for g in picks:
            g.kept = True
            swapped(g.names)
    return scores
