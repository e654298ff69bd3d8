"""AWQ driver: activation-aware weight quantization of decoder models, layer by layer.

For every decoder layer, the inputs of its linear layers are streamed into two
statistics per distinct input (never stored): ``H = 2/n X^T X`` and the mean
``|x|`` of each input channel. Then, for each *scaling group* (the linears that
share one input: q/k/v, gate/up, o, down):

1. scale search (C++, ``torch.ops.quantcore.awq_search_scale``): for
   ``alpha = i / n_grid``, ``s = mean|x| ** alpha`` (normalised), quantize
   ``W diag(s)``, divide back and score the output error ``tr(D H D^T)`` on the
   calibration inputs; keep the best ``s`` (``alpha = 0`` is plain RTN);
2. folding: ``1/s`` goes into the op before (RMSNorm/LayerNorm weight and bias,
   the rows of ``v_proj`` for ``o_proj``, of ``up_proj`` for ``down_proj``) from
   a table of scaling groups per model family; the folded layer is checked to
   compute what it computed before. Where no fold exists (or the check fails),
   the ``QuantLinear`` keeps ``s`` as its ``input_scale``;
3. clip search (C++, ``awq_search_clip``) per output row and group, except for
   the linears that make queries and keys;
4. quantization of the scaled, clipped weights with RTN, or with GPTQ
   (``then_gptq=True``) against the Hessian of the scaled inputs.

The quantized layer then produces the next layer's inputs, as in GPTQ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ._targets import replace_module
from .calibration import (
    ForwardInputs,
    _first_tensor,
    _module_device,
    calibration_windows,
    compute_device,
    release_replaced,
    find_decoder_layers,
    rtn_unreached,
    walk_layers,
)
from .config import QuantConfig
from .nn.quant_linear import QuantLinear, is_conv1d, linear_weight

__all__ = ["AWQConfig", "scaling_groups", "ScalingGroup"]

# Linears whose outputs meet in the attention scores: clipping them is scored
# badly by a per-linear output error (AWQ skips them too).
_NO_CLIP = ("q_proj", "k_proj", "query", "key", "qkv_proj", "c_attn", "Wqkv", "query_key_value")


@dataclass(frozen=True)
class AWQConfig(QuantConfig):
    """AWQ (Lin et al.): scale salient input channels before quantizing.

    Args (beyond bits / group_size / sym / scale_dtype):
        n_grid: scale candidates ``alpha = i / n_grid``, ``i < n_grid``.
        duo_scaling: AutoAWQ's variant ``s = mean|x|^a / mean|w|^(1-a)`` (plain
            RTN still competes, so it never scores worse than no scaling).
        clip: search a clip threshold per output row and group.
        clip_grid, clip_max_shrink: clip ratios ``1 - i / clip_grid`` while
            ``i < clip_max_shrink * clip_grid``.
        fold: fold ``1/s`` into the op before where the architecture allows
            (otherwise every ``QuantLinear`` keeps its ``input_scale``).
        unfolded: what happens to a scale no earlier op can absorb (e.g. o_proj
            under grouped-query attention, GPT-2's c_proj after GELU):
            ``"input_scale"`` keeps it on the layer (best accuracy; quantcore
            format only), ``"skip"`` does not scale those linears, as AutoAWQ
            does (every checkpoint format can store the result).
        then_gptq: quantize the scaled (and clipped) weights with GPTQ instead
            of RTN; ``act_order``, ``percdamp``, ``block_size`` are GPTQ's.
        n_samples, seq_len, seed: calibration windows drawn from the given text.

    >>> import quantcore
    >>> quantcore.AWQConfig(bits=4, group_size=128, then_gptq=True).method
    'awq'
    """

    method: ClassVar[str] = "awq"

    n_grid: int = 20
    duo_scaling: bool = False
    clip: bool = True
    clip_grid: int = 20
    clip_max_shrink: float = 0.5
    fold: bool = True
    unfolded: str = "input_scale"
    then_gptq: bool = False
    act_order: bool = False
    percdamp: float = 0.01
    block_size: int = 128
    n_samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size == 0:
            raise ValueError("AWQ needs group_size > 0 or -1 (per channel), not 0 (per tensor)")
        if not 1 <= self.n_grid <= 1000 or not 1 <= self.clip_grid <= 1000:
            raise ValueError("n_grid and clip_grid must be in [1, 1000]")
        if not 0.0 <= self.clip_max_shrink < 1.0:
            raise ValueError(f"clip_max_shrink must be in [0, 1), got {self.clip_max_shrink}")
        if not 0 <= self.percdamp < 10:
            raise ValueError(f"percdamp must be in [0, 10), got {self.percdamp}")
        if self.block_size < 1 or self.n_samples < 1 or self.seq_len < 2:
            raise ValueError("block_size and n_samples must be >= 1 and seq_len >= 2")
        if self.unfolded not in ("input_scale", "skip"):
            raise ValueError(f"unfolded must be 'input_scale' or 'skip', got {self.unfolded!r}")
        if self.act_order and not self.then_gptq:
            raise ValueError("act_order is a GPTQ option: set then_gptq=True to use it")


# ------------------------------------------------------------ scaling groups

@dataclass(frozen=True)
class ScalingGroup:
    """Linears (names inside a decoder block) that share one input, and the op
    before them that can absorb ``1/s``.

    ``kind``: ``"norm"`` (weight and bias divided by s), ``"norm_plus_one"``
    (Gemma's ``x * (1 + w)``), ``"rows"`` (output rows ``rows[0]:rows[1]`` of
    the linear ``prev``), or ``""`` (no fold: the QuantLinears keep the scale).
    """

    linears: Tuple[str, ...]
    prev: str = ""
    kind: str = ""
    rows: Optional[Tuple[int, int]] = None


def _llama_like(mlp_norm: str, norm: str) -> List[Tuple[Tuple[str, ...], str, str, str]]:
    # (linears, prev op, fold kind, which rows of prev: "all" | "last_third" | "second_half")
    return [
        (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "input_layernorm", norm, ""),
        (("self_attn.o_proj",), "self_attn.v_proj", "rows", "all"),
        (("mlp.gate_proj", "mlp.up_proj"), mlp_norm, norm, ""),
        (("mlp.down_proj",), "mlp.up_proj", "rows", "all"),
    ]


_FAMILIES = {
    **{t: _llama_like("post_attention_layernorm", "norm") for t in ("llama", "mistral", "qwen2", "qwen3")},
    "gemma": _llama_like("post_attention_layernorm", "norm_plus_one"),
    **{t: _llama_like("pre_feedforward_layernorm", "norm_plus_one") for t in ("gemma2", "gemma3", "gemma3_text")},
    "phi3": [
        (("self_attn.qkv_proj",), "input_layernorm", "norm", ""),
        (("self_attn.o_proj",), "self_attn.qkv_proj", "rows", "last_third"),
        (("mlp.gate_up_proj",), "post_attention_layernorm", "norm", ""),
        (("mlp.down_proj",), "mlp.gate_up_proj", "rows", "second_half"),
    ],
    "opt": [
        (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn_layer_norm", "norm", ""),
        (("self_attn.out_proj",), "self_attn.v_proj", "rows", "all"),
        (("fc1",), "final_layer_norm", "norm", ""),
        (("fc2",), "fc1", "rows", "all"),  # only through ReLU (checked below)
    ],
    "gpt2": [
        (("attn.c_attn",), "ln_1", "norm", ""),
        (("attn.c_proj",), "attn.c_attn", "rows", "last_third"),
        (("mlp.c_fc",), "ln_2", "norm", ""),
        # mlp.c_proj follows a GELU: no fold, the QuantLinear keeps its scale.
    ],
}


def _out_features(module: nn.Module) -> int:
    return linear_weight(module).shape[0]


def _family_allows(model_config: Any, entry_prev: str) -> bool:
    """Folds the table cannot express as names: OPT's fc1 -> fc2 needs a ReLU
    (positively homogeneous) and norms before the layers (pre-LN)."""
    if model_config is None or getattr(model_config, "model_type", "") != "opt":
        return True
    if not getattr(model_config, "do_layer_norm_before", True):
        return False
    if entry_prev == "fc1":
        return getattr(model_config, "activation_function", "relu") == "relu"
    return True


def scaling_groups(model: nn.Module, block: nn.Module) -> List[ScalingGroup]:
    """The foldable scaling groups of one decoder block of ``model`` (from its
    ``config.model_type``), with fused-row slices resolved and shapes checked.
    Linears not listed (unknown families) get no fold."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    text_config = getattr(config, "text_config", None)
    if text_config is not None and model_type not in _FAMILIES:
        config, model_type = text_config, getattr(text_config, "model_type", "")
    groups = []
    for linears, prev, kind, rows in _FAMILIES.get(model_type, []):
        try:
            mods = [block.get_submodule(n) for n in linears]
            prev_mod = block.get_submodule(prev)
        except AttributeError:
            continue
        if not _family_allows(config, prev):
            continue
        width = linear_weight(mods[0]).shape[1]
        span = None
        if kind == "rows":
            out = _out_features(prev_mod)
            # A fused qkv's v rows line up with o_proj's inputs only when every
            # head has its own k/v (no grouped-query attention).
            span = {"all": (0, out), "last_third": (2 * out // 3, out) if out % 3 == 0 else None,
                    "second_half": (out // 2, out) if out % 2 == 0 else None}[rows]
            if span is None or span[1] - span[0] != width:
                continue
        elif getattr(prev_mod, "weight", None) is None or prev_mod.weight.shape != (width,):
            continue
        groups.append(ScalingGroup(tuple(linears), prev, kind, span))
    return groups


# -------------------------------------------------------------------- folding

class _Edits:
    """In-place edits of float parameters, undone on failure."""

    def __init__(self) -> None:
        self._saved: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def save(self, t: torch.Tensor) -> None:
        self._saved.append((t, t.detach().clone()))

    def mark(self) -> int:
        return len(self._saved)

    def undo(self, mark: int = 0) -> None:
        """Restores everything saved since ``mark`` (default: everything)."""
        with torch.no_grad():
            while len(self._saved) > mark:
                t, old = self._saved.pop()
                t.copy_(old)


def _divide_rows_(module: nn.Module, span: Tuple[int, int], s: torch.Tensor, edits: _Edits) -> None:
    """Output features ``span`` of a float linear divided by s."""
    w = module.weight
    edits.save(w)
    if is_conv1d(module):  # [in, out]
        w.data[:, span[0]:span[1]] = (w.data[:, span[0]:span[1]].float() / s).to(w.dtype)
    else:
        w.data[span[0]:span[1]] = (w.data[span[0]:span[1]].float() / s[:, None]).to(w.dtype)
    if module.bias is not None:
        edits.save(module.bias)
        b = module.bias.data
        b[span[0]:span[1]] = (b[span[0]:span[1]].float() / s).to(b.dtype)


def _fold_into_prev_(group: ScalingGroup, prev: nn.Module, s: torch.Tensor, edits: _Edits) -> None:
    with torch.no_grad():
        if group.kind == "rows":
            _divide_rows_(prev, group.rows, s, edits)
            return
        w = prev.weight
        edits.save(w)
        if group.kind == "norm_plus_one":  # x * (1 + w) -> x * (1 + w) / s
            w.data = ((1.0 + w.data.float()) / s - 1.0).to(w.dtype)
        else:
            w.data = (w.data.float() / s).to(w.dtype)
        bias = getattr(prev, "bias", None)
        if isinstance(bias, torch.Tensor):
            edits.save(bias)
            bias.data = (bias.data.float() / s).to(bias.dtype)


def _prev_absmax(group: ScalingGroup, prev: nn.Module) -> torch.Tensor:
    """max |value| per channel that 1/s will multiply in the op before."""
    if group.kind == "rows":
        w = linear_weight(prev).detach()[group.rows[0]:group.rows[1]].float().abs().amax(1)
    else:
        w = prev.weight.detach().float()
        w = (1.0 + w).abs() if group.kind == "norm_plus_one" else w.abs()
    bias = getattr(prev, "bias", None)
    if isinstance(bias, torch.Tensor):
        b = bias.detach().float()
        b = b[group.rows[0]:group.rows[1]] if group.kind == "rows" else b
        w = torch.maximum(w, b.abs())
    return w


def _weight_limit(dtype: torch.dtype, bits: int, scale_dtype: torch.dtype) -> float:
    """Largest |W s| (and |prev / s|) a candidate may produce: what the model's
    dtype holds, and what a group scale in scale_dtype can represent."""
    limit = float("inf")
    if dtype in (torch.float16, torch.bfloat16):
        limit = torch.finfo(dtype).max
    if scale_dtype == torch.float16:
        limit = min(limit, torch.finfo(torch.float16).max * ((1 << bits) - 1) / 2 * 0.99)
    return 0.0 if limit == float("inf") else float(limit)


# ----------------------------------------------------------------------- driver

class _InputStats:
    """Streamed statistics of one input shared by some linears."""

    def __init__(self, cols: int, device: torch.device) -> None:
        self.hessian = torch.zeros(cols, cols, device=device)
        self.samples = 0
        self.abs_sum = torch.zeros(cols, dtype=torch.float64, device=device)
        self.tokens = 0
        self.members: List[int] = []  # id() of the linears fed this input

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.samples = torch.ops.quantcore.gptq_hessian_update(self.hessian, x, self.samples)
        self.abs_sum += x.abs().sum(0, dtype=torch.float64)
        self.tokens += x.shape[0]

    @property
    def x_mean(self) -> torch.Tensor:
        return (self.abs_sum / max(self.tokens, 1)).float()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm((a - b).float()) / torch.linalg.vector_norm(b.float()).clamp_min(1e-30))


def awq_quantize_model(
    model: nn.Module,
    config: AWQConfig,
    targets: Sequence[Tuple[str, nn.Module]],
    calib: Any,
    tokenizer: Any,
    progress: bool,
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[List[Tuple[str, QuantLinear, float, float]], Dict[str, str], Dict[str, str]]:
    """Quantizes ``targets`` layer by layer. Returns ``[(name, layer, rel_err, seconds)]``,
    ``{name: note}`` (fallbacks) and ``{name: where its AWQ scale went}``."""
    windows = calibration_windows(calib, tokenizer, config.n_samples, config.seq_len, config.seed)
    layers_path, layers = find_decoder_layers(model)
    compute = compute_device(device, layers)
    replaced: List[Tuple[nn.Module, str, nn.Module]] = []
    edits = _Edits()
    homes = [_module_device(layer) for layer in layers]
    try:
        return _quantize_layers(model, config, targets, windows, layers_path, layers, compute, progress,
                                replaced, edits)
    except BaseException:
        # A failure (NaN activations, Ctrl-C) leaves the model as it was.
        for block, name, original in reversed(replaced):
            replace_module(block, name, original)
        edits.undo()
        for layer, home in zip(layers, homes):
            layer.to(home)
        raise


def _collect_stats(block, run_block, n, todo, names, compute):
    """One pass of the float block over all windows: per distinct input, its
    statistics (linears fed the same tensor share them), and window 0's output."""
    stats: Dict[int, _InputStats] = {}   # id(module) -> shared stats
    order: List[_InputStats] = []
    inputs = ForwardInputs()

    def make_hook(mod):
        def hook(_m, args):
            x = args[0]
            owner = inputs.owner(x)
            if id(mod) not in stats:
                if owner is not None and owner != id(mod):
                    stats[id(mod)] = stats[owner]
                    stats[owner].members.append(id(mod))
                    return
                st = _InputStats(linear_weight(mod).shape[1], compute)
                st.members.append(id(mod))
                stats[id(mod)] = st
                order.append(st)
            elif owner is not None and stats[owner] is stats[id(mod)] and owner != id(mod):
                return  # already accumulated for this group
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{names[id(mod)]}: calibration inputs contain NaN or Inf")
            inputs.record(x, id(mod))
            stats[id(mod)].add(x)
        return hook

    handles = [m.register_forward_pre_hook(make_hook(m)) for _, m in todo]
    reference = None
    try:
        for i in range(n):
            inputs.clear()
            out = _first_tensor(run_block(i))
            if i == 0:
                reference = out.detach()
    finally:
        for h in handles:
            h.remove()
    return order, reference


def _quantize_layers(model, config, targets, windows, layers_path, layers, compute, progress, replaced, edits):
    wanted = {id(m): n for n, m in targets}
    results, notes, scaling = [], {}, {}
    with torch.no_grad():
        bar = tqdm(range(len(layers)), desc="quantcore awq", disable=not progress, unit="layer")
        for li, block, run_block, n_windows in walk_layers(model, layers, windows, compute, bar):
            todo = [(n, m) for n, m in block.named_modules() if id(m) in wanted]
            if todo:
                prefix = f"{layers_path}.{li}."
                layer_results = _quantize_block(model, block, todo, prefix, run_block, n_windows, config,
                                                compute, replaced, edits, notes, scaling)
                results.extend(layer_results)
                done = {r[0] for r in layer_results}
                results.extend(rtn_unreached(model, block, [(n, m) for n, m in todo if prefix + n not in done],
                                             prefix, config, replaced, notes))
                if layer_results:
                    bar.set_postfix(rel_err=f"{max(r[2] for r in layer_results):.4f}")
    return results, notes, scaling


@dataclass
class _Plan:
    """One scaling group of a block: its input statistics, fold, and chosen scale."""

    stats: _InputStats
    group: Optional[ScalingGroup]   # None: no fold known for these linears
    prev: Optional[nn.Module]
    scale: torch.Tensor
    alpha: float
    folded: bool = False


def _quantize_block(model, block, todo, prefix, run_block, n, config, compute, replaced, edits, notes, scaling):
    names = {id(m): prefix + n for n, m in todo}
    rel_names = {id(m): n for n, m in todo}
    by_id = {id(m): m for _, m in todo}
    inputs, reference = _collect_stats(block, run_block, n, todo, names, compute)
    if not inputs:
        return []  # no linear of this block ran: the caller rounds them to nearest
    plans = _search_scales(model, block, inputs, by_id, rel_names, config, compute)
    err = _fold_and_check(plans, by_id, run_block, reference, edits)
    if err is not None:
        for plan in plans:
            for i in plan.stats.members:
                if plan.group is not None:
                    notes[names[i]] = (f"AWQ fold changed the layer's output (relative error {err:.2g}): "
                                       "scale kept as input_scale")

    # Each linear's effective weight: rows divided by the folds into it, columns scaled.
    row_scale: Dict[int, Tuple[Tuple[int, int], torch.Tensor]] = {}
    for plan in plans:
        if not plan.folded and config.unfolded == "skip":
            plan.scale = torch.ones_like(plan.scale)
        where = (f"folded into {prefix}{plan.group.prev}" if plan.folded else
                 "no fold: not scaled (unfolded='skip')" if config.unfolded == "skip" else "kept as input_scale")
        for i in plan.stats.members:
            scaling[names[i]] = f"alpha {plan.alpha:.2f}, {where}"
        if plan.folded and plan.group.kind == "rows" and id(plan.prev) in by_id:
            row_scale[id(plan.prev)] = (plan.group.rows, plan.scale)

    results = []
    for plan in plans:
        s = plan.scale
        hessian = plan.stats.hessian / (s[:, None] * s[None, :])  # of the scaled inputs x / s
        for i in plan.stats.members:
            m = by_id[i]
            t0 = time.perf_counter()
            w = linear_weight(m).detach().to(compute, torch.float32, copy=True)
            bias = m.bias.detach().float().clone() if m.bias is not None else None
            if i in row_scale:
                (r0, r1), rs = row_scale[i]
                w[r0:r1] /= rs[:, None]
                if bias is not None:
                    bias[r0:r1] /= rs.to(bias.device)
            keep = not plan.folded and config.unfolded == "input_scale"
            qlayer, rel = _quantize_linear(m, w * s, hessian, bias, s if keep else None, config, rel_names[i])
            replace_module(block, rel_names[i], qlayer)
            replaced.append((block, rel_names[i], m))
            release_replaced(model, m)
            results.append((names[i], qlayer, rel, time.perf_counter() - t0))
    return results


def _search_scales(model, block, inputs, by_id, rel_names, config, compute) -> List[_Plan]:
    """The best scale of each observed input group, and the fold the family table has for it."""
    table = {frozenset(g.linears): g for g in scaling_groups(model, block)} if config.fold else {}
    dtype = linear_weight(by_id[inputs[0].members[0]]).dtype
    limit = _weight_limit(dtype, config.bits, config.scale_dtype)
    plans = []
    for st in inputs:
        group = table.get(frozenset(rel_names[i] for i in st.members))
        prev = block.get_submodule(group.prev) if group is not None else None
        weight = torch.cat([linear_weight(by_id[i]).detach().float() for i in st.members]).to(compute)
        prev_absmax = _prev_absmax(group, prev).to(compute) if group is not None else None
        s, losses = torch.ops.quantcore.awq_search_scale(
            weight, st.hessian, st.x_mean, prev_absmax, config.bits, config.group_size, config.sym,
            config.n_grid, config.duo_scaling, limit, config.scale_dtype)
        finite = torch.isfinite(losses)
        alpha = float(torch.argmin(torch.where(finite, losses, torch.inf))) / config.n_grid if finite.any() else 0.0
        if config.duo_scaling and bool(torch.all(s == 1)):
            alpha = float("nan")  # RTN won over every duo candidate
        plans.append(_Plan(st, group, prev, s, alpha))
    return plans


def _fold_and_check(plans, by_id, run_block, reference, edits) -> Optional[float]:
    """Folds every plan that has a fold and checks the float block on window 0.
    Returns None when the output is unchanged (plans marked folded), else the
    relative error (folds undone, scales to be kept as input_scale)."""
    folded = [p for p in plans if p.group is not None]
    if not folded:
        return None
    mark = edits.mark()
    probe = _Edits()  # temporary: the linears about to be quantized, scaled for the check only
    with torch.no_grad():
        for p in folded:
            s = p.scale.to(p.prev.weight.device)
            if p.group.kind == "rows" and id(p.prev) in by_id:  # its quantized weight takes the rows
                _divide_rows_(p.prev, p.group.rows, s, probe)
            else:
                _fold_into_prev_(p.group, p.prev, s, edits)
        for p in folded:
            for i in p.stats.members:
                m = by_id[i]
                probe.save(m.weight)
                s = p.scale.to(m.weight.device)
                m.weight.data = (m.weight.data.float() * (s[:, None] if is_conv1d(m) else s)).to(m.weight.dtype)
        try:
            out = _first_tensor(run_block(0))
        finally:
            probe.undo()
    tol = 1e-3 if reference.dtype == torch.float32 else 5e-2
    err = _relative(out, reference)
    if err <= tol:
        for p in folded:
            p.folded = True
        return None
    edits.undo(mark)
    return err


def _quantize_linear(module, w, hessian, bias, input_scale, config, rel_name) -> Tuple[QuantLinear, float]:
    gs = config.group_size
    target = w
    if config.clip and not any(k in rel_name.rsplit(".", 1)[-1] for k in _NO_CLIP):
        clip = torch.ops.quantcore.awq_search_clip(w, hessian, config.bits, gs, config.sym, config.clip_grid,
                                                   config.clip_max_shrink, config.scale_dtype)
        width = gs if gs > 0 else w.shape[1]
        m = clip.repeat_interleave(width, dim=1)
        w = torch.maximum(torch.minimum(w, m), -m)
    g_idx = None
    if config.then_gptq:
        codes, scales, zeros, g_idx, _info = torch.ops.quantcore.gptq_quantize(
            w.contiguous(), hessian, config.bits, gs, config.sym, config.act_order, False, config.percdamp,
            config.block_size, False, config.scale_dtype)
        codes, scales, zeros, g_idx = codes.cpu(), scales.cpu(), zeros.cpu(), g_idx.cpu()
    else:
        codes, scales, zeros = torch.ops.quantcore.rtn_quantize(
            w.cpu().contiguous(), config.bits, gs, config.sym, False, 100, 0.8, config.scale_dtype)
    dtype = linear_weight(module).dtype
    layer = QuantLinear.from_codes(
        codes, scales, None if config.sym else zeros, bias.to(dtype).cpu() if bias is not None else None,
        bits=config.bits, group_size=gs, dtype=dtype, g_idx=g_idx,
        input_scale=input_scale.cpu() if input_scale is not None else None).to(w.device)
    # Output error on the calibration inputs, in the scaled space: tr(D H D^T) / tr(W H W^T).
    deq = layer._dequantize_codes(torch.float32)  # in the scaled space, like target
    diff = deq - target
    num = float(torch.einsum("ij,jk,ik->", diff, hessian, diff))
    den = float(torch.einsum("ij,jk,ik->", target, hessian, target))
    return layer, (num / den) ** 0.5 if den > 0 else 0.0
