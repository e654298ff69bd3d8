"""Quantization-aware training: fake-quantized linears for ordinary training
loops, and their conversion to real ``QuantLinear`` layers.

``prepare_(model, QATConfig(...))`` swaps each ``nn.Linear`` / ``Conv1D`` in place
for a :class:`FakeQuantLinear` whose forward pass uses the weight quantized and
dequantized on the config's grid (``torch.ops.quantcore.qat_fake_quantize``, a
C++ kernel with a straight-through backward). Scales (and zero points, when
asymmetric) start from the RTN grid of the weights and are learned with LSQ /
LSQ+ gradients. ``convert_(model)`` then stores exactly the codes the training
simulated, in ``QuantLinear`` layers that save, load and run like any PTQ model.

>>> import torch, quantcore
>>> from quantcore import qat
>>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
>>> names = qat.prepare_(model, qat.QATConfig(bits=4, group_size=32))
>>> loss = model(torch.randn(4, 64)).square().mean(); loss.backward()
>>> model[0].weight_scale.grad.shape
torch.Size([64, 2])
>>> qat.convert_(model)
['0', '2']
>>> type(model[0]).__name__
'QuantLinear'
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from ._targets import find_targets, replace_module
from ._torch_kernels import _qat_grid, snap_grid
from .config import QuantConfig
from .nn.quant_linear import QuantLinear, is_conv1d, linear_weight

__all__ = ["QATConfig", "FakeQuantLinear", "prepare_", "convert_", "fake_quantize", "fake_quantize_per_token"]

_LEARNABLE = ("lsq", "none")
_INITS = ("minmax", "rtn", "mse", "gptq", "awq")
_ACTIVATION = re.compile(r"int([2-8])_per_token(_asym)?")


def _activation_spec(activation: Optional[str]) -> Tuple[Optional[int], bool]:
    """``"int8_per_token"`` -> (8, symmetric); ``"int4_per_token_asym"`` -> (4, asymmetric)."""
    if activation is None:
        return None, True
    m = _ACTIVATION.fullmatch(activation) if isinstance(activation, str) else None
    if m is None:
        raise ValueError(f"activation must be None or 'int<bits>_per_token[_asym]' with bits 2..8 (e.g. "
                         f"'int8_per_token'), got {activation!r}")
    return int(m.group(1)), m.group(2) is None


@dataclass(frozen=True)
class QATConfig(QuantConfig):
    """Fake quantization of the weights during training.

    Args (beyond bits / group_size / sym / scale_dtype, as for RTN):
        learnable: ``"lsq"`` learns the scales (and, asymmetric, the zero
            points: LSQ+) with gradients scaled by ``1 / sqrt(N * qmax)``;
            ``"none"`` keeps the initial grid and trains the weights only.
        activation: ``None`` (weights only) or dynamic per-token fake
            quantization of each layer's input: ``"int8_per_token"`` (symmetric;
            ``"int8_per_token_asym"``, other widths ``int4_per_token`` ...).
            Converted layers keep quantizing their input the same way.
        init: the initial grid: ``"minmax"`` or ``"rtn"`` (RTN's), ``"mse"`` (RTN with
            the MSE clip search), ``"gptq"`` or ``"awq"``: that PTQ method
            (without act-order) runs first on calibration data given to
            ``prepare_``, and training starts from its codes: the float weights
            become its dequantized ones; with AWQ the model also takes its
            folded norms, and layers whose scale could not be folded divide
            their input by it (``input_scale``, kept through ``convert_``).

    The forward pass rounds the scales to ``scale_dtype`` and the zero points to
    integers (straight through), so ``convert_`` reproduces it exactly.
    """

    method: ClassVar[str] = "qat"

    learnable: str = "lsq"
    init: str = "minmax"
    activation: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learnable not in _LEARNABLE:
            raise ValueError(f"learnable must be one of {_LEARNABLE}, got {self.learnable!r}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r}")
        _activation_spec(self.activation)


# ------------------------------------------------------------------ the ops
# Autograd of both ops is C++ (cpp/bindings/ops_qat_autograd.cpp): no Python runs
# per layer in the backward pass.

def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor], bits: int,
                  group_size: int, grid_dtype: Optional[torch.dtype] = None, grad_factor: float = 1.0) -> torch.Tensor:
    """``(clamp(round(x / s) + z, 0, 2**bits - 1) - z) * s`` per group of ``group_size``
    columns of the 2-D ``x``; ``scale``/``zero`` ``[rows or 1, cols / group_size]``,
    ``zero=None`` meaning ``2**(bits-1)``. Differentiable (straight through, with
    the LSQ / LSQ+ derivatives for ``scale`` and ``zero``, times ``grad_factor``).

    ``grid_dtype`` set: ``scale``/``zero`` are raw learnable parameters, snapped in
    the kernel to the grid a converted model stores (scales rounded to
    ``grid_dtype`` and floored at fp16's smallest normal, zero points rounded and
    clamped to the code range), the gradients passing straight through."""
    return torch.ops.quantcore.qat_fake_quantize(x, scale, zero, int(bits), int(group_size), grid_dtype,
                                                 float(grad_factor))


def fake_quantize_per_token(x: torch.Tensor, bits: int = 8, sym: bool = True) -> torch.Tensor:
    """Dynamic per-token fake quantization of activations ``x [..., features]``:
    each row quantized on RTN's min/max grid of its own values (fp32 scale) and
    dequantized. Straight-through gradient. Rows holding NaN/Inf come back NaN.

    >>> import torch
    >>> x = torch.tensor([[0.5, -1.0, 0.25]])
    >>> fake_quantize_per_token(x, bits=8)
    tensor([[ 0.5020, -0.9961,  0.2510]])
    """
    return torch.ops.quantcore.fake_quantize_per_token(x, int(bits), bool(sym))


# ------------------------------------------------------------------ the module

class FakeQuantLinear(nn.Module):
    """A linear layer trained through fake quantization of its weight.

    Parameters: ``weight`` and ``bias`` (the original module's own, so existing
    references and optimizers keep working), ``weight_scale`` ``[rows, groups]``
    (``[1, 1]`` per tensor) in float32 and, asymmetric with ``learnable="lsq"``,
    ``weight_zero``. GPT-2's ``Conv1D`` (weight stored transposed) is supported.
    """

    def __init__(self, module: nn.Module, config: QATConfig, grid: Optional[Tuple[torch.Tensor, ...]] = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Linear) and not is_conv1d(module):
            raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")
        self.transposed = is_conv1d(module)
        self.weight = module.weight
        self.bias = module.bias
        w = self._weight_2d().detach()
        self.out_features, self.in_features = w.shape
        gs = config.group_size
        self.group_size = self.in_features if gs in (ops.PER_CHANNEL, ops.PER_TENSOR) else gs
        self.per_tensor = gs == ops.PER_TENSOR
        if self.in_features % self.group_size:
            raise ValueError(f"group_size {gs} does not divide in_features {self.in_features}")
        self.config = config
        self.act_bits, self.act_sym = _activation_spec(config.activation)
        input_scale = None
        if grid is not None:  # a PTQ solver's grid for this layer (init="gptq"/"awq")
            scales, zeros, input_scale = grid
        else:
            _, scales, zeros = ops.rtn_quantize(
                w.float().cpu().contiguous(), bits=config.bits, group_size=gs, symmetric=config.sym,
                mse_clip=config.init == "mse", scale_dtype=config.scale_dtype)
        scales = scales.float().to(w.device)
        # AWQ's per-input-channel scale where no earlier op absorbed it: x / input_scale.
        self.register_buffer("input_scale", input_scale.float().to(w.device) if input_scale is not None else None)
        learn = config.learnable == "lsq"
        self.weight_scale = nn.Parameter(scales, requires_grad=learn)
        if config.sym:
            self.register_parameter("weight_zero", None)
        else:
            self.weight_zero = nn.Parameter(zeros.float().to(w.device), requires_grad=learn)
        # LSQ's gradient scale: 1 / sqrt(weights per scale * positive code range).
        per_scale = self.out_features * self.in_features if self.per_tensor else self.group_size
        self.grad_factor = 1.0 / math.sqrt(per_scale * ((1 << (config.bits - 1)) - 1 if config.sym
                                                        else (1 << config.bits) - 1))

    def _weight_2d(self) -> torch.Tensor:
        return self.weight.t() if self.transposed else self.weight

    def grid(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The grid the forward pass uses (no gradient): scales rounded to
        ``scale_dtype`` and floored at fp16's smallest normal (LSQ may push one to
        zero or below), integer zero points in the code range."""
        return snap_grid(self.weight_scale, self.weight_zero, self.config.bits, self.config.scale_dtype)

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight ``[out, in]``, differentiable w.r.t. the weight,
        the scales and the zero points (one fused op, its autograd in C++)."""
        return fake_quantize(self._weight_2d().contiguous(), self.weight_scale, self.weight_zero, self.config.bits,
                             self.group_size, self.config.scale_dtype, self.grad_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The linear layer on the fake-quantized weight (and input, with activation quantization)."""
        if self.input_scale is not None:
            x = (x / self.input_scale).to(x.dtype)
        if self.act_bits is not None:
            x = torch.ops.quantcore.fake_quantize_per_token(x, self.act_bits, self.act_sym)
        w = self.quantized_weight()
        if w.dtype != x.dtype:
            w = w.to(x.dtype)
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        return F.linear(x, w, bias)

    def to_quant_linear(self) -> QuantLinear:
        """The ``QuantLinear`` holding exactly the codes this layer's forward pass uses."""
        with torch.no_grad():
            s, z = self.grid()
            w = self._weight_2d().detach().float()
            s_cols, z_cols, qmax = _qat_grid(w, s, z, self.config.bits, self.group_size)
            codes = torch.clamp(torch.round(w / s_cols) + z_cols, 0, qmax).to(torch.uint8)
            bias = self.bias.detach() if self.bias is not None else None
            gs = ops.PER_TENSOR if self.per_tensor else (ops.PER_CHANNEL if self.group_size == self.in_features
                                                         else self.group_size)
            layer = QuantLinear.from_codes(
                codes.cpu(), s.to(self.config.scale_dtype).cpu(), z.to(torch.uint8).cpu() if z is not None else None,
                bias.cpu() if bias is not None else None, bits=self.config.bits, group_size=gs,
                dtype=self.weight.dtype, act_bits=self.act_bits, act_sym=self.act_sym,
                input_scale=self.input_scale.cpu() if self.input_scale is not None else None)
        return layer.to(self.weight.device)

    def extra_repr(self) -> str:
        """The layer's shape and grid, for ``print(model)``."""
        c = self.config
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={c.bits}, "
                f"group_size={self.group_size}, sym={c.sym}, learnable={c.learnable}"
                + (f", activation={c.activation}" if c.activation else ""))


# ------------------------------------------------------------------ prepare / convert

def prepare_(model: nn.Module, config: QATConfig, *, include: Optional[Sequence[str]] = None,
             exclude: Optional[Sequence[str]] = None, skip_output_embeddings: bool = True,
             calib: Any = None, tokenizer: Any = None, ptq_config: Optional[QuantConfig] = None,
             progress: bool = True) -> List[str]:
    """Swap the model's linear layers (``include``/``exclude`` name patterns as for
    ``quantize_``; ``lm_head`` kept in float by default) for :class:`FakeQuantLinear`
    in place. Returns the names of the swapped layers. Create the optimizer after
    this call so it sees the new ``weight_scale`` / ``weight_zero`` parameters.

    ``init="gptq"`` / ``"awq"`` need ``calib`` (and ``tokenizer`` for text);
    ``ptq_config`` (a ``GPTQConfig`` / ``AWQConfig`` with the same bits, group
    size, symmetry and scale dtype, no act-order) sets the solver's options. The
    solver runs on a copy of the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be a quantcore.qat.QATConfig, got {type(config).__name__}")
    targets, _ = find_targets(model, include, exclude, skip_output_embeddings)
    targets = [(n, m) for n, m in targets if not isinstance(m, FakeQuantLinear)]
    if not targets:
        raise ValueError("the model has no nn.Linear or Conv1D layers to prepare"
                         + (" after include/exclude filtering" if include or exclude else ""))
    problems = []
    for name, module in targets:
        w = module.weight
        in_f = w.shape[0] if is_conv1d(module) else w.shape[1]
        if config.group_size > 0 and in_f % config.group_size:
            problems.append(f"{name}: in_features {in_f} is not divisible by group_size {config.group_size}")
        elif (in_f * config.bits) % 32:
            problems.append(f"{name}: in_features {in_f} x {config.bits} bits does not fill whole int32 words")
        elif not bool(torch.isfinite(w).all()):
            problems.append(f"{name}: weight contains NaN or Inf")
    if problems:
        raise ValueError("cannot prepare:\n  " + "\n  ".join(problems[:10]))
    grids: Dict[str, Tuple[torch.Tensor, ...]] = {}
    if config.init in ("gptq", "awq"):
        grids = _ptq_grids(model, config, targets, include, exclude, skip_output_embeddings, calib, tokenizer,
                           ptq_config, progress)
    new = [(name, FakeQuantLinear(module, config, grids.get(name))) for name, module in targets]
    for name, layer in new:
        replace_module(model, name, layer)
    return [name for name, _ in new]


def _ptq_grids(model, config, targets, include, exclude, skip_output_embeddings, calib, tokenizer, ptq_config,
               progress):
    """Runs GPTQ or AWQ (``config.init``) on a copy of the model. Sets each target's
    float weight to the solver's dequantized codes (before any input scale), copies
    every other changed tensor (AWQ's folded norms) into the model, and returns
    each target's grid ``{name: (scales, zeros or None, input_scale or None)}``."""
    from .awq import AWQConfig
    from .gptq import GPTQConfig
    from .quantize import quantize_

    method = config.init
    if calib is None:
        raise ValueError(f'QATConfig(init="{method}") needs calibration data: prepare_(model, cfg, calib=texts, '
                         'tokenizer=tok)')
    if config.group_size == ops.PER_TENSOR:
        raise ValueError(f'init="{method}" needs per-group or per-channel grids (group_size > 0 or -1)')
    kind = GPTQConfig if method == "gptq" else AWQConfig
    ptq = ptq_config or kind(bits=config.bits, group_size=config.group_size, sym=config.sym,
                             scale_dtype=config.scale_dtype)
    if not isinstance(ptq, kind):
        raise TypeError(f"ptq_config must be a {kind.__name__} for init={method!r}, got {type(ptq).__name__}")
    if ptq.act_order or (ptq.bits, ptq.group_size, ptq.sym, ptq.scale_dtype) != (
            config.bits, config.group_size, config.sym, config.scale_dtype):
        raise ValueError("ptq_config must match the QAT grid (bits, group_size, sym, scale_dtype) and not use "
                         "act_order (QAT groups are contiguous)")
    ref = copy.deepcopy(model)
    quantize_(ref, ptq, include=include, exclude=exclude, skip_output_embeddings=skip_output_embeddings,
              calib=calib, tokenizer=tokenizer, progress=progress)
    target_names = {name for name, _ in targets}
    grids = {}
    with torch.no_grad():
        ref_state = ref.state_dict()
        for key, value in model.state_dict().items():  # AWQ's folds live outside the targets
            if key.rpartition(".")[0] not in target_names and key in ref_state and ref_state[key].shape == value.shape:
                value.copy_(ref_state[key])
        for name, module in targets:
            q = ref.get_submodule(name)
            w = linear_weight(module)
            w.copy_(q._dequantize_codes(torch.float32).to(device=w.device, dtype=w.dtype))
            grids[name] = (q.scales.float().to(w.device),
                           q.zeros.float().to(w.device) if q.zeros is not None else None,
                           q.input_scale.to(w.device) if q.input_scale is not None else None)
    return grids


def convert_(model: nn.Module) -> List[str]:
    """Replace every :class:`FakeQuantLinear` by the ``QuantLinear`` holding the codes
    its forward pass used (outputs equal up to floating-point rounding). Returns
    the converted names."""
    names = [n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    if not names:
        raise ValueError("the model has no FakeQuantLinear layers: call qat.prepare_ first")
    for name in names:
        replace_module(model, name, model.get_submodule(name).to_quant_linear())
    return names
