"""GPTQ driver: sequential, layer-by-layer quantization of decoder models.

The solver is C++ (``torch.ops.quantcore.gptq_quantize``, cpp/algorithms/gptq.cpp);
this module feeds it. Calibration inputs of the first decoder layer are captured
once; then for each layer the inputs of its linear layers are streamed into
Hessians (never stored), the layer is quantized, and the quantized layer is
re-run to produce the next layer's inputs. Only the current layer needs to be on
the compute device.
"""

from __future__ import annotations

import math

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ._targets import replace_module
from .config import QuantConfig, RTNConfig
from .calibration import (  # noqa: F401  (re-exported: GPTQ's public helpers)
    ForwardInputs,
    _capture_layer_inputs,
    _Captured,
    _first_tensor,
    _module_device,
    calibration_windows,
    compute_device,
    release_replaced,
    find_decoder_layers,
    rtn_unreached,
    walk_layers,
)
from .loss_guard import GroupScore, has_output_head, loss_guard
from .nn.quant_linear import QuantLinear, linear_weight

__all__ = ["GPTQConfig", "calibration_windows", "find_decoder_layers"]


@dataclass(frozen=True)
class GPTQConfig(QuantConfig):
    """GPTQ (Frantar et al.): error-compensating, Hessian-aware rounding.

    Args (beyond bits / group_size / sym / scale_dtype):
        act_order: quantize columns in order of decreasing Hessian diagonal
            (GPTQ's ``desc_act``). Groups then follow the solve order; the
            ``QuantLinear`` stores the permutation (``g_idx`` on export).
        static_groups: compute every group's grid from the original weight.
        percdamp: damping as a fraction of the mean Hessian diagonal (retried
            with more damping, then a diagonal floor, then RTN if H is unusable).
        block_size: lazy-batch width of the solver.
        mse_clip: MSE shrink search for each group grid.
        true_sequential: quantize the linears of a layer in forward order, each
            against inputs produced by the already-quantized ones.
        rtn_guard: hold out the last ``holdout_fraction`` of the calibration
            windows; GPTQ solves on the rest, and a linear keeps round-to-nearest
            codes where those give the lower output error on the held-out
            windows (noted in the report). At 8 bits GPTQ's compensation can
            fit the calibration text at the expense of unseen text; this keeps
            GPTQ from ending up worse than RTN. Off when fewer than one window
            would be held out.
        skip_first_tokens: leave the first positions of every calibration window
            out of the Hessians. The first token (BOS, an attention sink) carries
            activations orders of magnitude larger than the rest in many models,
            so it can dominate H and the solver's trade-offs.
        sink_weight: weight of each calibration window's first position in the
            Hessians (and in the held-out check); ``"auto"`` (the default) is
            half the window's length, so the first position carries a third of
            each window's weight, whatever ``seq_len``; 1 is the paper's plain
            average. The first token is the attention sink of decoder LLMs:
            every later token attends to it, so an error in its keys, values or
            MLP output reaches the whole sequence, yet as one token of
            ``seq_len`` it barely counts in H and GPTQ trades its accuracy for
            the other tokens'. On Gemma-3-270M at W8, GPTQ's output error at the
            first position was 1-5x RTN's in the middle layers (0.2-0.4x at the
            other positions); with a third of H there it fell to 0.001-0.13x
            while the other positions' error did not change, and GPTQ's
            perplexity improved at W8 and W4 (benchmarks/RESULTS.md). A fixed
            large weight is not safe: 256 with 32-token windows puts 89% of H on
            the first positions, and GPTQ then lost to RTN on tiny models.
            Ignored with ``skip_first_tokens``.
        loss_guard: after all layers are quantized, score the model's
            next-token loss on the last ``loss_guard_windows`` calibration
            windows with round-to-nearest codes in one group of linears at a
            time (a projection in one of ``loss_guard_ranges`` contiguous
            ranges of decoder layers) and keep RTN in a group where that lowers
            the loss by more than 3 standard errors (if several qualify, all of
            them only when together they beat the best one alone). The layer-wise
            objective can miss what the loss sees: on Gemma-3-270M at W8, GPTQ's
            codes in the last third's down projections cost 0.002 nats/token
            that no layer's output error showed, and made GPTQ worse than RTN.
            ``"auto"`` (the default) turns it on at 8 bits, where GPTQ's margin
            over RTN is that small; at W3 g128 it found nothing to change
            there. The scored windows are the last ones: with the defaults
            (128 windows, ``holdout_fraction`` 0.125) exactly those
            ``rtn_guard`` keeps out of the solve; otherwise some were solved on,
            which favours GPTQ's codes. Costs one forward pass of the layers from the group's range
            on, and of the model's head, over the scored windows per group
            (about 20 groups: 11 minutes for Gemma-3-270M on 2 CPU cores, where
            the 262k-token vocabulary's head dominates); the RTN layers are kept
            on the host until the end. Not with checkpoint streaming
            (``quantize_checkpoint`` refuses ``True`` and skips ``"auto"``).
        gptaq_alpha: asymmetric calibration (GPTAQ, also called GPTQv2; Li et al.,
            ICML 2025). 0 is plain GPTQ, which fits each linear's output on the
            quantized model's inputs X~ to its float weight's output on the same
            X~. With alpha > 0 the target is the float *model's* output X W^T on
            its own inputs X, so each layer also corrects the error the layers
            before it left: GPTQ then rounds towards W + alpha * W (X - X~)^T X~ H^-1,
            the least-squares minimiser of ||X W^T - X~ W^T||, alpha = 1 being the
            exact one (GPTAQ's code uses 0.25). Costs a float copy of one decoder
            layer and a second set of calibration hidden states.
        n_samples, seq_len, seed: calibration windows drawn from the given text.
    """

    method: ClassVar[str] = "gptq"

    act_order: bool = False
    static_groups: bool = False
    percdamp: float = 0.01
    block_size: int = 128
    mse_clip: bool = False
    true_sequential: bool = True
    rtn_guard: bool = True
    holdout_fraction: float = 0.125
    skip_first_tokens: int = 0
    sink_weight: Union[float, str] = "auto"
    loss_guard: Union[bool, str] = "auto"
    loss_guard_windows: int = 16
    loss_guard_ranges: int = 3
    gptaq_alpha: float = 0.0
    n_samples: int = 128
    seq_len: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.percdamp < 10:
            raise ValueError(f"percdamp must be in [0, 10), got {self.percdamp}")
        if self.block_size < 1 or self.n_samples < 1 or self.seq_len < 2:
            raise ValueError("block_size and n_samples must be >= 1 and seq_len >= 2")
        if not 0 <= self.skip_first_tokens < self.seq_len - 1:
            raise ValueError(f"skip_first_tokens must be in [0, seq_len - 1), got {self.skip_first_tokens}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if isinstance(self.sink_weight, str):
            if self.sink_weight != "auto":
                raise ValueError(f"sink_weight must be 'auto' or a finite number > 0, got {self.sink_weight!r}")
        elif isinstance(self.sink_weight, bool) or not isinstance(self.sink_weight, (int, float)):
            raise TypeError(f"sink_weight must be 'auto' or a number, got {type(self.sink_weight).__name__}")
        elif not (math.isfinite(self.sink_weight) and self.sink_weight > 0):
            raise ValueError(f"sink_weight must be 'auto' or a finite number > 0, got {self.sink_weight}")
        if not isinstance(self.loss_guard, bool) and self.loss_guard != "auto":
            raise TypeError(f"loss_guard must be a bool or 'auto', got {self.loss_guard!r}")
        for name in ("loss_guard_windows", "loss_guard_ranges"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if self.loss_guard_windows < 2 or self.loss_guard_ranges < 1:
            raise ValueError(f"loss_guard_windows must be >= 2 and loss_guard_ranges >= 1, got "
                             f"{self.loss_guard_windows} and {self.loss_guard_ranges}")
        if not 0 <= self.gptaq_alpha <= 1:
            raise ValueError(f"gptaq_alpha must be in [0, 1], got {self.gptaq_alpha}")
        if self.group_size == 0:  # one scale for a whole tensor defeats the column-by-column compensation
            raise ValueError("GPTQ needs group_size > 0 or -1 (per channel), not 0 (per tensor)")


# ----------------------------------------------------------------------- driver

def gptq_quantize_model(
    model: nn.Module,
    config: GPTQConfig,
    targets: Sequence[Tuple[str, nn.Module]],
    calib: Any,
    tokenizer: Any,
    progress: bool,
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[List[Tuple[str, QuantLinear, float, float]], Dict[str, str], Dict[str, Tuple[float, float]],
           List[GroupScore]]:
    """Quantizes ``targets`` layer by layer. Returns ``[(name, layer, rel_err, seconds)]``,
    ``{name: note}`` for layers whose Hessian needed extra damping or a fallback or
    that kept RTN, ``{name: (gptq, rtn)}``: relative output errors on the
    held-out windows (``rtn_guard``), and the groups ``loss_guard`` scored.

    ``device``: where each decoder layer is calibrated and solved (default: where
    the layers are). Only the current layer and the calibration activations
    live there; each layer goes back to its own device when done.
    """
    windows = calibration_windows(calib, tokenizer, config.n_samples, config.seq_len, config.seed)
    layers_path, layers = find_decoder_layers(model)
    compute = compute_device(device, layers)
    replaced: List[Tuple[nn.Module, str, nn.Module]] = []  # (block, name, original), to undo on failure
    homes = [_module_device(layer) for layer in layers]
    try:
        early_notes: Dict[str, str] = {}
        guard = _guard_wanted(model, config, early_notes)
        alternatives: Optional[Dict[str, Tuple[QuantLinear, float]]] = {} if guard else None
        results, notes, holdout = _quantize_layers(model, config, targets, windows, layers_path, layers, compute,
                                                   progress, replaced, alternatives)
        notes.update(early_notes)
        groups = _run_loss_guard(model, config, windows, layers_path, layers, compute, progress, alternatives,
                                 results, notes) if guard else []
        return results, notes, holdout, groups
    except BaseException:
        # A failure (NaN activations, Ctrl-C) leaves the model as it was.
        for block, name, original in reversed(replaced):
            replace_module(block, name, original)
        for layer, home in zip(layers, homes):
            layer.to(home)
        raise


def loss_guard_on(config: GPTQConfig) -> bool:
    """Whether ``config`` runs the loss guard: ``True``, or ``"auto"`` at 8 bits."""
    return config.loss_guard is True or (config.loss_guard == "auto" and config.bits >= 8)


def _guard_wanted(model: nn.Module, config: GPTQConfig, notes: Dict[str, str]) -> bool:
    """Whether to run the loss guard, decided before the layer walk (which keeps
    RTN layers only for it): ``loss_guard=True`` on a model it cannot score is
    an error, ``"auto"`` is then off with a note."""
    if not loss_guard_on(config):
        return False
    if getattr(model, "_quantcore_stream", None) is not None:  # quantize_checkpoint refuses True up front
        notes["loss_guard"] = "off: a streamed checkpoint's layers are written out as they are quantized"
        return False
    if not has_output_head(model):
        if config.loss_guard is True:
            raise ValueError(f"loss_guard=True scores the model's next-token loss, but {type(model).__name__} has "
                             "no output head (get_output_embeddings()); use a causal LM model or loss_guard=False")
        notes["loss_guard"] = f"off: {type(model).__name__} has no output head to score the loss with"
        return False
    return True


def _run_loss_guard(model, config, windows, layers_path, layers, compute, progress, alternatives, results, notes
                    ) -> List[GroupScore]:
    """``loss_guard`` after the layer walk: swaps RTN into the groups it picks,
    updates ``results`` and ``notes`` for their linears."""
    scored = windows[-config.loss_guard_windows:]
    if len(scored) < 2:
        notes["loss_guard"] = f"off: {len(scored)} calibration window leaves no spread to judge by"
        return []
    t0 = time.perf_counter()
    groups = loss_guard(model, layers, layers_path, scored, compute, {n: a[0] for n, a in alternatives.items()},
                        config.loss_guard_ranges, progress)
    notes["loss_guard"] = (f"{len(groups)} groups scored on {len(scored)} calibration windows in "
                           f"{time.perf_counter() - t0:.1f} s; RTN kept in "
                           + (", ".join(g.label for g in groups if g.kept) or "none"))
    swapped = {}
    for g in groups:
        if g.kept:
            for name in g.names:
                swapped[name] = g
                notes[name] = "; ".join(filter(None, [notes.get(name), (
                    f"loss guard: RTN's codes for {g.label} (loss {g.delta:+.5f} +- {g.se:.5f} nats/token "
                    f"on {len(scored)} calibration windows)")]))
    for i, (name, layer, rel, secs) in enumerate(results):
        if name in swapped:
            alt, alt_rel = alternatives[name]
            results[i] = (name, alt, alt_rel, secs)
    return groups


def _quantize_layers(model, config, targets, windows, layers_path, layers, compute, progress, replaced,
                     alternatives):
    wanted = {id(m): n for n, m in targets}
    results, notes, holdout = [], {}, {}
    with torch.no_grad():
        bar = tqdm(range(len(layers)), desc="quantcore gptq", disable=not progress, unit="layer")
        asym = config.gptaq_alpha > 0
        for li, block, run_block, n_windows in walk_layers(model, layers, windows, compute, bar, float_path=asym):
            todo = [(n, m) for n, m in block.named_modules() if id(m) in wanted]
            names = {id(m): f"{layers_path}.{li}.{n}" for n, m in todo}
            rel_names = {id(m): n for n, m in todo}
            layer_errs = []
            # rtn_guard: the last `held` windows only score GPTQ against RTN.
            held = int(n_windows * config.holdout_fraction) if config.rtn_guard else 0
            if li == 0 and config.rtn_guard and not held:
                notes["rtn_guard"] = (f"off: {n_windows} calibration windows leave none to hold out "
                                      f"at holdout_fraction={config.holdout_fraction}")
            window = [0]
            while todo:
                # Linears fed the same tensor (q/k/v, gate/up) share one Hessian:
                # it is accumulated once, and the sharing defines true-sequential groups.
                # id(module) -> [H, n, held-out inputs, (X - X~)^T X~ for gptaq_alpha], shared between aliases
                acc: Dict[int, list] = {}
                order: List[int] = []         # modules in the order their input first arrived
                inputs = ForwardInputs()
                first_input: List[Optional[tuple]] = [None]

                def make_hook(mod):
                    def hook(_m, args):
                        x = args[0]
                        key = ForwardInputs.key(x)
                        if config.true_sequential:
                            # Only the group fed first is solved in this pass: once another
                            # input arrives, the rest of the block need not run.
                            if first_input[0] is None:
                                first_input[0] = key
                            elif key != first_input[0]:
                                raise _Captured
                        owner = inputs.owner(x)
                        if id(mod) not in acc:
                            order.append(id(mod))
                            if owner is not None and owner != id(mod):
                                acc[id(mod)] = acc[owner]  # same input as an earlier linear
                                return
                            cols = linear_weight(mod).shape[1]
                            acc[id(mod)] = [torch.zeros(cols, cols, device=compute), 0,
                                            _HeldOut(cols, compute) if held else None,
                                            torch.zeros(cols, cols, device=compute) if asym else None]
                        elif owner is not None and acc[owner] is acc[id(mod)] and owner != id(mod):
                            return  # this input was already accumulated for the group
                        if not bool(torch.isfinite(x).all()):
                            raise ValueError(f"{names[id(mod)]}: calibration inputs contain NaN or Inf")
                        inputs.record(x, id(mod))
                        h = acc[id(mod)]
                        xs = x.detach()
                        if config.skip_first_tokens and xs.dim() == 3:  # [batch, seq, features]
                            xs = xs[:, config.skip_first_tokens:]
                        xs = _weigh_sink(xs, config)
                        if window[0] >= n_windows - held:
                            h[2].add(xs)
                        else:
                            h[1] = torch.ops.quantcore.gptq_hessian_update(h[0], xs.float(), h[1])
                            if asym:
                                _add_asymmetry(h[3], float_inputs, rel_names[id(mod)], xs, config)
                    return hook

                handles = [m.register_forward_pre_hook(make_hook(m)) for _, m in todo]
                float_inputs: Dict[str, torch.Tensor] = {}  # this window's inputs on the float path, by name
                if asym:
                    handles += _float_input_hooks(run_block.float_block, [n for n, _ in todo], float_inputs,
                                                  config.true_sequential)
                try:
                    for i in range(n_windows):
                        window[0] = i
                        inputs.clear()
                        first_input[0] = None
                        float_inputs.clear()
                        if asym and i < n_windows - held:
                            try:
                                run_block.run_float(i)
                            except _Captured:
                                pass
                        try:
                            run_block(i)
                        except _Captured:
                            pass
                finally:
                    float_inputs.clear()
                    for h in handles:
                        h.remove()
                # true_sequential: acc holds the group fed first; later groups see its quantized output.
                if not order:  # the rest never ran on calibration data
                    results += rtn_unreached(model, block, todo, f"{layers_path}.{li}.", config, replaced, notes)
                    break
                if config.true_sequential:
                    first = acc[order[0]]
                    now = [(n, m) for n, m in todo if acc.get(id(m)) is first]
                else:
                    now = [(n, m) for n, m in todo if id(m) in acc]
                for n, m in now:
                    t0 = time.perf_counter()
                    entry = acc[id(m)]
                    asym_args = {"asymmetry": entry[3], "seen": entry[1]} if asym else {}
                    qlayer, rel, note, held_errs = _solve_one(m, entry[0], config, entry[2], **asym_args)
                    if alternatives is not None:  # RTN's codes, for the model-level check after the walk
                        alternatives[names[id(m)]] = _rtn_alternative(m, qlayer, entry[0], config)
                    replace_module(block, n, qlayer)
                    replaced.append((block, n, m))
                    release_replaced(model, m)
                    full = names[id(m)]
                    if note:
                        notes[full] = note
                    if held_errs is not None:
                        holdout[full] = held_errs
                    results.append((full, qlayer, rel, time.perf_counter() - t0))
                    layer_errs.append(rel)
                reached = set(acc)
                for entry in acc.values():
                    entry.clear()  # free the Hessians now (``first`` and the hooks' cells still name the lists)
                del acc
                todo = [(n, m) for n, m in todo if all(m is not mm for _, mm in now)]
                if not config.true_sequential:  # one pass saw every input: the rest never ran
                    results += rtn_unreached(model, block, [(n, m) for n, m in todo if id(m) not in reached],
                                             f"{layers_path}.{li}.", config, replaced, notes)
                    todo = []
            if layer_errs:
                bar.set_postfix(rel_err=f"{max(layer_errs):.4f}")
    return results, notes, holdout


def _float_input_hooks(float_block: nn.Module, names: List[str], sink: Dict[str, torch.Tensor],
                       true_sequential: bool) -> list:
    """Hooks that record, by name, the inputs the float copy of a block feeds its
    linears (gptaq_alpha). Mirrors the quantized pass: with true_sequential the
    float pass stops once the group fed first has its input."""
    first: List[Optional[tuple]] = [None]

    def make(name):
        def hook(_m, args):
            x = args[0]
            key = ForwardInputs.key(x)
            if true_sequential:
                if not sink:
                    first[0] = key
                elif key != first[0]:
                    raise _Captured
            sink.setdefault(name, x.detach())
        return hook

    return [float_block.get_submodule(n).register_forward_pre_hook(make(n)) for n in names]


def sink_weight_for(config: GPTQConfig, window: int) -> float:
    """The weight of a ``window``-token calibration window's first position in H:
    ``config.sink_weight``, or half the window ("auto": a third of the window's
    weight on its first position; at least 1)."""
    if config.sink_weight == "auto":
        return max(1.0, window / 2)
    return float(config.sink_weight)


def _weigh_sink(x: torch.Tensor, config: GPTQConfig) -> torch.Tensor:
    """``x`` ([batch, seq, features]) with each window's first position scaled
    by sqrt(sink weight), so it counts that many times in X^T X; a copy."""
    if config.skip_first_tokens or x.dim() != 3 or x.shape[1] == 0:
        return x
    weight = sink_weight_for(config, x.shape[1])
    if weight == 1.0:
        return x
    x = x.clone()
    x[:, 0] *= math.sqrt(weight)
    return x


def _add_asymmetry(acc: torch.Tensor, float_inputs: Dict[str, torch.Tensor], name: str, x: torch.Tensor,
                   config: GPTQConfig) -> None:
    """acc += (X - X~)^T X~ for one window: X the float model's input of linear
    ``name``, X~ the quantized model's (``x``, already cut by ``skip_first_tokens``
    and weighted by ``_weigh_sink``); X gets the same cut and weights."""
    xf = float_inputs.get(name)
    if xf is not None and config.skip_first_tokens and xf.dim() == 3:
        xf = xf[:, config.skip_first_tokens:]
    if xf is not None:
        xf = _weigh_sink(xf, config)
    if xf is None or xf.shape != x.shape:
        raise ValueError(f"{name}: the float and the quantized model fed this linear different token sets; "
                         "gptaq_alpha needs the same tokens on both paths")
    cols = acc.shape[0]
    xq = x.reshape(-1, cols).float()
    acc.addmm_((xf.reshape(-1, cols).float() - xq).t(), xq)


def _asymmetric_target(weight: torch.Tensor, hessian: torch.Tensor, asymmetry: torch.Tensor, seen: int,
                       alpha: float, percdamp: float) -> Tuple[torch.Tensor, str]:
    """W + alpha * W D H^-1 with D = (X - X~)^T X~ scaled like H (2/n): the weight
    whose output on the quantized inputs best matches the float model's output.
    H is damped as the solver damps it (more if needed); returns W and a note
    when H cannot be factorised even then."""
    w = weight.float()
    if seen == 0:
        return w, ""
    d = asymmetry * (2.0 / seen)
    h = hessian.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    damp = percdamp * float(torch.diagonal(h).mean())
    for _ in range(4):
        factor, info = torch.linalg.cholesky_ex(h + damp * torch.eye(h.shape[0], device=h.device, dtype=h.dtype))
        if int(info) == 0:
            shift = torch.cholesky_solve((w @ d).t(), factor).t()  # (W D) H^-1, H symmetric
            return w + alpha * shift, ""
        damp = max(damp * 10, 1e-6)
    return w, "gptaq: Hessian not positive definite, asymmetric target skipped"


class _HeldOut:
    """Inputs of the held-out windows, as little memory as they allow: their rows
    while there are fewer than the layer's input width (less than a Hessian), then
    their Hessian. Either gives the output error of a candidate weight."""

    def __init__(self, cols: int, device: torch.device):
        self.cols, self.device = cols, device
        self.rows: List[torch.Tensor] = []
        self.count = 0
        self.hessian: Optional[torch.Tensor] = None
        self.seen = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, self.cols).float()
        if self.hessian is None and self.count + x.shape[0] <= self.cols:
            self.rows.append(x.clone())
            self.count += x.shape[0]
            return
        if self.hessian is None:
            self.hessian = torch.zeros(self.cols, self.cols, device=self.device)
            for r in self.rows:
                self.seen = torch.ops.quantcore.gptq_hessian_update(self.hessian, r, self.seen)
            self.rows = []
        self.seen = torch.ops.quantcore.gptq_hessian_update(self.hessian, x, self.seen)

    def output_error(self, deq: torch.Tensor, weight: torch.Tensor) -> Tuple[float, float]:
        """Squared output error of ``deq`` and squared output of ``weight`` on
        these inputs (the common factor 2/n left out of the rows' form)."""
        if self.hessian is not None:
            return _output_error(deq, weight, self.hessian)
        err = out = 0.0
        for r0 in range(0, weight.shape[0], 512):  # blocks of output rows: no weight-sized temporary
            w = weight[r0:r0 + 512].float()
            d = deq[r0:r0 + 512].float() - w
            for r in self.rows:
                err += float((r @ d.t()).pow(2).sum())
                out += float((r @ w.t()).pow(2).sum())
        return err, out


def _output_error(deq: torch.Tensor, weight: torch.Tensor, hessian: torch.Tensor,
                  rows: int = 512) -> Tuple[float, float]:
    """tr(D H D^T) and tr(W H W^T) for D = deq - W: the squared output error on the
    inputs H was accumulated from, and the squared output itself. Computed a
    block of rows at a time: no temporary as large as the weight."""
    err = out = 0.0
    for r in range(0, weight.shape[0], rows):
        w = weight[r:r + rows].float()
        d = deq[r:r + rows].float() - w
        err += float(((d @ hessian) * d).sum())
        out += float(((w @ hessian) * w).sum())
    return err, out


def _rtn_alternative(module: nn.Module, qlayer: QuantLinear, hessian: torch.Tensor,
                     config: GPTQConfig) -> Tuple[QuantLinear, float]:
    """Round-to-nearest layer for ``module`` (on the host until the loss guard)
    and its relative output error on the calibration inputs; ``qlayer`` itself
    when it already holds RTN's codes (kept by ``rtn_guard`` or as a fallback)."""
    rtn = _rtn_layer(module, config)
    if _same_codes(rtn, qlayer):
        return qlayer, float("nan")
    num, den = _output_error(rtn.dequantize(torch.float32), linear_weight(module).detach(), hessian)
    return rtn.cpu(), (num / den) ** 0.5 if den > 0 else 0.0


def _rtn_layer(module: nn.Module, config: GPTQConfig) -> QuantLinear:
    """Round-to-nearest with GPTQ's grid settings, on the weight's device: what
    ``rtn_guard`` and the loss guard compare GPTQ's codes against."""
    return QuantLinear.from_linear(module, RTNConfig(
        bits=config.bits, group_size=config.group_size, sym=config.sym, mse_clip=config.mse_clip,
        scale_dtype=config.scale_dtype)).to(linear_weight(module).device)


def _same_codes(a: QuantLinear, b: QuantLinear) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def _solve_one(module: nn.Module, hessian: torch.Tensor, config: GPTQConfig,
               held_out: Optional[_HeldOut] = None, asymmetry: Optional[torch.Tensor] = None,
               seen: int = 0) -> Tuple[QuantLinear, float, str, Optional[Tuple[float, float]]]:
    """Solves one linear on the device its weight and Hessian are on. With
    ``held_out`` (inputs of windows the solve did not see), the result
    is checked against round-to-nearest there and RTN is kept when it is better.
    Returns the layer, its relative output error on the calibration inputs, a
    note, and the relative output errors of GPTQ and RTN on the held-out inputs."""
    weight = linear_weight(module).detach()  # the solver makes its own float32 copy
    gs = config.group_size
    target, asym_note = weight, ""
    if asymmetry is not None:  # gptaq_alpha: round towards the weight that undoes the earlier layers' error
        target, asym_note = _asymmetric_target(weight, hessian, asymmetry, seen, config.gptaq_alpha, config.percdamp)
    codes, scales, zeros, g_idx, info = torch.ops.quantcore.gptq_quantize(
        target, hessian, config.bits, gs, config.sym, config.act_order, config.static_groups,
        config.percdamp, config.block_size, config.mse_clip, config.scale_dtype)
    bias = module.bias.detach().cpu() if module.bias is not None else None
    layer = QuantLinear.from_codes(codes.cpu(), scales.cpu(), None if config.sym else zeros.cpu(), bias,
                                   bits=config.bits, group_size=gs, dtype=linear_weight(module).dtype,
                                   g_idx=g_idx.cpu()).to(weight.device)
    damp, fallback = float(info[0]), int(info[1])
    note = {0: "", 1: "Hessian not positive definite: diagonal floor", 2: "Hessian unusable: RTN"}[fallback]
    if not note and damp > config.percdamp + 1e-9:
        note = f"needed damping {damp:.2f}"
    note = "; ".join(filter(None, [note, asym_note]))
    held = None
    if held_out is not None and fallback != 2:
        rtn = _rtn_layer(module, config)
        # Both are scored against what the solver aimed at (the asymmetric target with gptaq_alpha).
        gptq_err, scale = held_out.output_error(layer.dequantize(torch.float32), target)
        rtn_err, _ = held_out.output_error(rtn.dequantize(torch.float32), target)
        ratio = (gptq_err / scale) ** 0.5 if scale > 0 else 0.0
        rtn_ratio = (rtn_err / scale) ** 0.5 if scale > 0 else 0.0
        held = (ratio, rtn_ratio)
        if rtn_err <= gptq_err:
            layer = rtn
            note = "; ".join(filter(None, [note, f"kept RTN: held-out output error {rtn_ratio:.3g} "
                                                 f"vs GPTQ {ratio:.3g}"]))
    # Relative output error on the calibration inputs, from H: tr(D H D^T) / tr(W H W^T).
    num, den = _output_error(layer.dequantize(torch.float32), weight, hessian)
    rel = (num / den) ** 0.5 if den > 0 else 0.0
    return layer, rel, note, held
