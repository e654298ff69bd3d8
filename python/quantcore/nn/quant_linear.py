"""``QuantLinear``: a frozen linear layer holding packed integer weights."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import _C, ops
from ..config import QuantConfig
from .tc_layout import tc_layout_supported, to_tc_layout

__all__ = ["QuantLinear", "is_conv1d", "linear_weight"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CUDA_KERNELS = bool(_C.cuda_kernels)  # built with QUANTCORE_ENABLE_CUDA
# Batches (rows of x) served by the tensor-core GEMM on CUDA; below it the GEMV
# is faster, above it dequantize + cuBLAS (benchmarks/RESULTS.md, issue 5).
_TC_MIN_M, _TC_MAX_M = 3, 128
# With the Hopper wgmma GEMM (an sm_90a build on an sm_90 GPU) up to 256 rows.
_TC_MAX_M_WGMMA = 256
_tc_max_m: dict = {}  # device index -> rows


def _tc_rows_limit(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _tc_max_m:
        hopper = bool(getattr(_C, "cuda_wgmma", False)) and torch.cuda.get_device_capability(index) == (9, 0)
        _tc_max_m[index] = _TC_MAX_M_WGMMA if hopper else _TC_MAX_M
    return _tc_max_m[index]


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2 style ``Conv1D`` (transformers.pytorch_utils): a linear layer storing ``W^T``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The ``[out_features, in_features]`` weight of an ``nn.Linear`` or ``Conv1D``."""
    w = module.weight
    return w.t() if is_conv1d(module) else w


class QuantLinear(nn.Module):
    """Linear layer with ``bits``-bit integer weights and group-wise scales.

    Buffers (all in ``state_dict``):

    * ``qweight`` int32 ``[out, in * bits / 32]``: codes packed along the input dim;
    * ``scales`` ``[out, in / group_size]`` in ``scale_dtype``;
    * ``zeros`` uint8, same shape (asymmetric only; symmetric uses ``2**(bits-1)``);
    * ``perm`` int32 ``[in]`` (act-order layers only): input column ``perm[j]`` of
      the original weight is column ``j`` here, so that groups are contiguous
      (GPTQ's ``g_idx`` is ``g_idx[perm[j]] = j // group_size``); the forward
      pass gathers ``x[..., perm]`` once and runs the ordinary kernel;
    * ``input_scale`` float32 ``[in]`` (optional; AWQ layers whose scale could
      not be folded into the op before): the codes hold ``W * input_scale``
      and the forward pass divides ``x`` by it first;
    * ``bias`` ``[out]`` (optional).

    ``act_bits`` (optional, e.g. 8 for layers trained by QAT with
    ``activation="int8_per_token"``): the input is fake-quantized per token
    (``torch.ops.quantcore.fake_quantize_per_token``, ``act_sym``) before the
    matmul, exactly as in training.

    ``forward`` runs the fused CPU kernel for 4- and 8-bit weights; on CUDA (a
    build with ``QUANTCORE_ENABLE_CUDA=ON``, fp16/bf16 activations) the GEMV
    kernel for 1-2 rows (up to 8 for 8-bit layers and 4-bit layers that have
    no tensor-core layout), the tensor-core GEMM for 3-128 rows (4-bit; 3-256
    on Hopper with an sm_90a build) and dequantize + cuBLAS beyond; dequantize + ``F.linear`` otherwise. The layer
    keeps a float32 copy of the scales for the CPU kernel, rebuilt by
    :meth:`repack` after loading; ``.to(dtype)`` on the model converts the bias
    but never the scales, which would change the weights. On a GPU a 4-bit
    layer also holds its codes and scales in the tensor-core layout
    (``nn/tc_layout.py``, not saved): the codes then take twice their packed
    size in GPU memory (the GEMV still reads the canonical ones).

    >>> import torch, quantcore
    >>> lin = torch.nn.Linear(64, 32)
    >>> q = quantcore.QuantLinear.from_linear(lin, quantcore.RTNConfig(bits=8, group_size=32))
    >>> x = torch.randn(3, 64)
    >>> bool(torch.allclose(q(x), torch.nn.functional.linear(x, q.dequantize(), lin.bias), atol=1e-5))
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bits: int = 4,
        group_size: int = 128,
        sym: bool = True,
        bias: bool = True,
        scale_dtype: torch.dtype = torch.float16,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
        act_order: bool = False,
        input_scale: bool = False,
        act_bits: Optional[int] = None,
        act_sym: bool = True,
    ) -> None:
        super().__init__()
        if act_bits is not None and (isinstance(act_bits, bool) or not isinstance(act_bits, int)
                                     or not 2 <= act_bits <= 8):
            raise ValueError(f"act_bits must be None or an int in [2, 8], got {act_bits!r}")
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in/out features must be positive, got {in_features}, {out_features}")
        if not 2 <= bits <= 8:
            raise ValueError(f"bits must be in [2, 8], got {bits}")
        if group_size in (ops.PER_CHANNEL, ops.PER_TENSOR):
            group_size = in_features
        if group_size <= 0 or in_features % group_size:
            raise ValueError(f"group_size {group_size} does not divide in_features {in_features}")
        if (in_features * bits) % 32:
            raise ValueError(
                f"in_features ({in_features}) x bits ({bits}) must be a multiple of 32 to pack "
                "the codes into int32 words")
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group_size = group_size
        self.sym = sym
        self.act_bits = act_bits
        self.act_sym = bool(act_sym)
        groups = in_features // group_size
        self.register_buffer(
            "qweight", torch.zeros(out_features, in_features * bits // 32, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=scale_dtype, device=device))
        zeros = None if sym else torch.full(
            (out_features, groups), 1 << (bits - 1), dtype=torch.uint8, device=device)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)
        perm = torch.arange(in_features, dtype=torch.int32, device=device) if act_order else None
        self.register_buffer("perm", perm)
        scale_in = torch.ones(in_features, dtype=torch.float32, device=device) if input_scale else None
        self.register_buffer("input_scale", scale_in)
        self.register_buffer("_kernel_scales", None, persistent=False)
        # CUDA, 4-bit: the codes, scales and zeros in the tensor-core layout
        # (nn/tc_layout.py), built once whenever the layer lands on a GPU.
        for name in ("_tc_codes", "_tc_scales", "_tc_zeros"):
            self.register_buffer(name, None, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.repack())
        self.repack()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zeros: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        *,
        bits: int,
        group_size: int,
        dtype: Optional[torch.dtype] = None,
        g_idx: Optional[torch.Tensor] = None,
        input_scale: Optional[torch.Tensor] = None,
        act_bits: Optional[int] = None,
        act_sym: bool = True,
    ) -> "QuantLinear":
        """Build from unpacked codes ``[out, in]`` (uint8) and their grid.

        ``zeros=None`` means symmetric. Per-tensor grids (``scales`` of shape
        ``[1, 1]``) are expanded per output row. ``g_idx`` (``[in]``, the group
        of each input column, as GPTQ's act-order produces it) may assign columns
        to groups in any order, ``group_size`` columns per group; the layer then
        stores the permutation that makes groups contiguous. ``input_scale``
        (``[in]``, positive): the codes quantize ``W * input_scale`` (AWQ); the
        layer divides its input by it.
        """
        if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8 or codes.dim() != 2:
            raise TypeError("codes must be a 2-D torch.uint8 tensor [out_features, in_features]")
        out_features, in_features = codes.shape
        gs = in_features if group_size in (ops.PER_CHANNEL, ops.PER_TENSOR) else max(group_size, 1)
        if tuple(scales.shape) not in {(out_features, in_features // gs), (1, 1)}:
            raise ValueError(f"scales must be [{out_features}, {in_features // gs}] or [1, 1], "
                             f"got {tuple(scales.shape)}")
        if zeros is not None and tuple(zeros.shape) != tuple(scales.shape):
            raise ValueError(f"zeros must have the shape of scales {tuple(scales.shape)}, got {tuple(zeros.shape)}")
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ValueError(f"bias must be [{out_features}], got {tuple(bias.shape)}")
        if scales.shape[0] == 1 and out_features > 1:
            scales = scales.expand(out_features, -1)
            zeros = zeros.expand(out_features, -1) if zeros is not None else None
        if group_size in (ops.PER_CHANNEL, ops.PER_TENSOR):
            group_size = in_features
        if input_scale is not None and (not isinstance(input_scale, torch.Tensor)
                                        or tuple(input_scale.shape) != (in_features,)):
            raise ValueError(f"input_scale must be a tensor of shape [{in_features}]")
        perm = _group_permutation(g_idx, in_features, group_size) if g_idx is not None else None
        if perm is not None:
            codes = codes.index_select(1, perm.to(codes.device).long())
        layer = cls(
            in_features, out_features, bits=bits, group_size=group_size, sym=zeros is None,
            bias=bias is not None, scale_dtype=scales.dtype,
            dtype=dtype or (bias.dtype if bias is not None else torch.float32), device=codes.device,
            act_order=perm is not None, input_scale=input_scale is not None, act_bits=act_bits, act_sym=act_sym)
        with torch.no_grad():
            if input_scale is not None:
                layer.input_scale.copy_(input_scale)
            if perm is not None:
                layer.perm.copy_(perm)
            layer.qweight.copy_(ops.pack(codes.contiguous(), bits, 32))
            layer.scales.copy_(scales)
            if zeros is not None:
                layer.zeros.copy_(zeros)
            if bias is not None:
                layer.bias.copy_(bias)
        layer.repack()
        return layer

    @classmethod
    def from_linear(cls, module: nn.Module, config: QuantConfig) -> "QuantLinear":
        """Quantize an ``nn.Linear`` (or GPT-2 ``Conv1D``) with round-to-nearest.

        The source module is not modified.
        """
        if not isinstance(module, nn.Linear) and not is_conv1d(module):
            raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")
        weight = linear_weight(module).detach()
        if weight.device.type != "cpu" and not (weight.is_cuda and _CUDA_KERNELS):
            weight = weight.cpu()  # quantized by the CPU kernel (the CUDA build quantizes on the GPU)
        codes, scales, zeros = ops.rtn_quantize(
            weight.contiguous(), bits=config.bits, group_size=config.group_size, symmetric=config.sym,
            mse_clip=getattr(config, "mse_clip", False), clip_grid=getattr(config, "clip_grid", 100),
            clip_max_shrink=getattr(config, "clip_max_shrink", 0.8), scale_dtype=config.scale_dtype)
        bias = module.bias.detach().to(weight.device) if module.bias is not None else None
        layer = cls.from_codes(
            codes, scales, None if config.sym else zeros, bias, bits=config.bits,
            group_size=config.group_size, dtype=weight.dtype)
        return layer.to(module.weight.device)

    # ------------------------------------------------------------------ kernel
    def repack(self) -> None:
        """Rebuild the kernel-side buffers from the canonical ones and check them.

        Called after construction and ``load_state_dict``; call it yourself after
        writing to ``scales`` or ``zeros`` in place.
        """
        if self.zeros is not None and self.zeros.numel() and int(self.zeros.max()) >= (1 << self.bits):
            raise ValueError(f"zeros hold values >= 2**bits ({1 << self.bits}); corrupt checkpoint?")
        if self.scales.numel() and not bool(torch.isfinite(self.scales).all()):
            raise ValueError("scales contain NaN or Inf; corrupt checkpoint?")
        if self.perm is not None:
            if self.perm.shape != (self.in_features,) or self.perm.dtype != torch.int32 or not torch.equal(
                    torch.sort(self.perm).values.cpu(), torch.arange(self.in_features, dtype=torch.int32)):
                raise ValueError(f"perm must be a permutation of range({self.in_features}) (int32); "
                                 "corrupt checkpoint?")
        if self.input_scale is not None:
            if self.input_scale.shape != (self.in_features,) or not bool(
                    (torch.isfinite(self.input_scale) & (self.input_scale > 0)).all()):
                raise ValueError("input_scale must be finite and positive; corrupt checkpoint?")
        self._kernel_scales = self.scales if self.scales.dtype == torch.float32 else self.scales.float()
        self._build_tc_layout()

    def _build_tc_layout(self) -> None:
        on_gpu = self.qweight.device.type == "cuda" and _CUDA_KERNELS
        if on_gpu and tc_layout_supported(self.out_features, self.in_features, self.bits, self.group_size):
            with torch.no_grad():
                self._tc_codes, self._tc_scales, self._tc_zeros = to_tc_layout(self.qweight, self.scales, self.zeros)
        else:
            self._tc_codes = self._tc_scales = self._tc_zeros = None

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) would cast the scales and so change the weights: move
        # them to the new device but keep their dtype.
        kept = {name: self._buffers.pop(name) for name in ("scales", "_kernel_scales", "input_scale", "_tc_scales")}
        super()._apply(fn, recurse)
        for name, t in kept.items():
            if t is not None:
                device = fn(torch.empty(0, device=t.device)).device
                t = t.to(device)
            self._buffers[name] = t
        # Build the tensor-core layout on arrival on a GPU; drop it when leaving.
        if (self._tc_codes is not None) != (self.qweight.device.type == "cuda"):
            self._build_tc_layout()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias`` on the quantized weight, with the fastest kernel for ``x``'s device, dtype and rows."""
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"QuantLinear expects float32/float16/bfloat16 input, got {x.dtype}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        if self.input_scale is not None:  # AWQ scale that no earlier op absorbed
            x = (x / self.input_scale).to(x.dtype)
        if self.act_bits is not None:  # trained with per-token activation quantization
            x = torch.ops.quantcore.fake_quantize_per_token(x, self.act_bits, self.act_sym)
        # The CPU kernels read 4-bit codes in byte pairs: odd 4-bit groups take the fallback below.
        if self.bits in (4, 8) and x.device.type == "cpu" and (self.bits == 8 or self.group_size % 2 == 0):
            x2 = x.reshape(-1, self.in_features)
            if self.perm is not None:  # act-order: bring the inputs into group order
                x2 = x2.index_select(1, self.perm)
            elif not x2.is_contiguous():
                x2 = x2.contiguous()
            y = torch.ops.quantcore.qlinear(
                x2, self.qweight, self._kernel_scales, self.zeros, self.bias, self.bits, self.group_size)
            return y.view(*x.shape[:-1], self.out_features)
        if (x.device.type == "cuda" and _CUDA_KERNELS and self.bits in (4, 8) and self.group_size % 32 == 0
                and x.dtype in (torch.float16, torch.bfloat16)):
            # GEMV for 1-2 rows, the tensor-core GEMM (4-bit) up to 128 (256 on Hopper), else dequantize +
            # cuBLAS (cpp/kernels/cuda/); the stored scales are read at their own precision.
            x2 = x.reshape(-1, self.in_features)
            x2 = x2.index_select(1, self.perm) if self.perm is not None else x2.contiguous()
            if self._tc_codes is not None and _TC_MIN_M <= x2.shape[0] <= _tc_rows_limit(x2.device):
                y = torch.ops.quantcore.qgemm_tc(x2, self._tc_codes, self._tc_scales, self._tc_zeros, self.bias)
            else:
                y = torch.ops.quantcore.qlinear(x2, self.qweight, self.scales, self.zeros, self.bias, self.bits,
                                                self.group_size)
            return y.view(*x.shape[:-1], self.out_features)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self._dequantize_codes(x.dtype), bias)  # x is already divided by input_scale

    def _dequantize_codes(self, dtype: torch.dtype) -> torch.Tensor:
        # The stored grid in the original column order, before any input_scale.
        s, z = self._kernel_scales, self.zeros
        if self.perm is None:
            return ops.dequantize(self.qweight, s, z, self.bits, self.group_size, dtype)
        # Columns back to the original order, a block of rows at a time (no second weight-sized tensor).
        out = torch.empty(self.out_features, self.in_features, dtype=dtype, device=self.qweight.device)
        perm = self.perm.long()
        rows = max(1, (1 << 20) // self.in_features)
        per_tensor = s.shape[0] == 1 and self.out_features != 1
        for r in range(0, self.out_features, rows):
            sr = s if per_tensor else s[r:r + rows]
            zr = z if z is None or per_tensor else z[r:r + rows]
            w = ops.dequantize(self.qweight[r:r + rows], sr, zr, self.bits, self.group_size, dtype)
            out[r:r + rows].index_copy_(1, perm, w)
        return out

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The float weight ``[out, in]`` these codes represent (original column order;
        divided by ``input_scale`` when the layer has one, so ``x @ W.T`` is the output)."""
        dtype = dtype or (self.bias.dtype if self.bias is not None else torch.float32)
        if self.input_scale is None:
            return self._dequantize_codes(dtype)
        return (self._dequantize_codes(torch.float32) / self.input_scale).to(dtype)

    @property
    def g_idx(self) -> torch.Tensor:
        """int32 ``[in]``: the group of each input column in the original order (GPTQ's ``g_idx``)."""
        groups = torch.arange(self.in_features, dtype=torch.int32, device=self.qweight.device) // self.group_size
        if self.perm is None:
            return groups
        return torch.empty_like(groups).index_copy_(0, self.perm.long(), groups)

    # ---------------------------------------------------------------- reports
    def storage_bytes(self) -> int:
        """Bytes of the persistent buffers (what a checkpoint stores)."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.zeros, self.perm,
                                                            self.input_scale, self.bias) if t is not None)

    def weight_bits_per_element(self) -> float:
        """Bits per weight, counting codes, scales, zero points and the act-order permutation."""
        total = sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.zeros, self.perm,
                                                            self.input_scale) if t is not None)
        return 8.0 * total / (self.in_features * self.out_features)

    def extra_repr(self) -> str:
        """The layer's shape and grid, for ``print(model)``."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, sym={self.sym}, bias={self.bias is not None}"
                + (", act_order=True" if self.perm is not None else "")
                + (", input_scale=True" if self.input_scale is not None else "")
                + (f", act_bits={self.act_bits}, act_sym={self.act_sym}" if self.act_bits is not None else ""))


def _group_permutation(g_idx: torch.Tensor, in_features: int, group_size: int) -> Optional[torch.Tensor]:
    """The int32 permutation that sorts columns by group (stable), or None when
    ``g_idx`` already is ``arange(in) // group_size``."""
    if not isinstance(g_idx, torch.Tensor) or g_idx.dtype.is_floating_point or g_idx.shape != (in_features,):
        raise ValueError(f"g_idx must be an integer tensor of shape [{in_features}]")
    g = g_idx.detach().cpu().long()
    expected = torch.arange(in_features) // group_size
    if torch.equal(g, expected):
        return None
    perm = torch.argsort(g, stable=True)
    if not torch.equal(g[perm], expected):
        raise ValueError(f"g_idx must put exactly group_size={group_size} columns in each of the "
                         f"{in_features // group_size} groups")
    return perm.to(torch.int32)
