"""Fake (meta) implementations of torch.ops.quantcore.*, so the ops work on meta
tensors, under FakeTensorMode and inside ``torch.compile`` graphs.

They compute output shapes and dtypes only, mirroring the C++ shape rules.
"""

from __future__ import annotations

import torch


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@torch.library.register_fake("quantcore::pack")
def _pack_fake(codes: torch.Tensor, bits: int, word_bits: int) -> torch.Tensor:
    _check(word_bits in (8, 32), "quantcore.pack: word_bits must be 8 or 32")
    _check(2 <= bits <= 8, "quantcore.pack: bits must be in [2, 8]")
    cols = codes.shape[-1]
    _check((cols * bits) % word_bits == 0, "quantcore.pack: rows must fill whole words")
    dtype = torch.uint8 if word_bits == 8 else torch.int32
    return codes.new_empty((*codes.shape[:-1], cols * bits // word_bits), dtype=dtype)


@torch.library.register_fake("quantcore::unpack")
def _unpack_fake(packed: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    word_bits = 8 if packed.dtype == torch.uint8 else 32
    row_bits = packed.shape[-1] * word_bits
    _check(row_bits % bits == 0, "quantcore.unpack: rows must hold whole codes")
    dtype = torch.int8 if signed else torch.uint8
    return packed.new_empty((*packed.shape[:-1], row_bits // bits), dtype=dtype)


@torch.library.register_fake("quantcore::rtn_quantize")
def _rtn_quantize_fake(weight, bits, group_size, symmetric, mse_clip, clip_grid, clip_max_shrink,
                       scale_dtype):
    _check(weight.dim() == 2, "quantcore.rtn_quantize: weight must be 2-D")
    rows, cols = weight.shape
    if group_size == 0:
        grid = (1, 1)
    else:
        gs = cols if group_size == -1 else group_size
        _check(cols % gs == 0, "quantcore.rtn_quantize: group_size must divide the columns")
        grid = (rows, cols // gs)
    codes = weight.new_empty((rows, cols), dtype=torch.uint8)
    return codes, weight.new_empty(grid, dtype=scale_dtype), weight.new_empty(grid, dtype=torch.uint8)


@torch.library.register_fake("quantcore::qlinear")
def _qlinear_fake(x, qweight, scales, zeros, bias, bits, group_size):
    _check(bits in (4, 8), "quantcore.qlinear: bits must be 4 or 8")
    k = qweight.shape[1] * 32 // bits
    _check(x.shape[-1] == k, f"quantcore.qlinear: x has {x.shape[-1]} features, weight holds {k}")
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


@torch.library.register_fake("quantcore::gptq_quantize")
def _gptq_quantize_fake(weight, hessian, bits, group_size, symmetric, act_order, static_groups, percdamp,
                        block_size, mse_clip, scale_dtype):
    rows, cols = weight.shape
    groups = 1 if group_size == -1 else cols // group_size
    return (weight.new_empty((rows, cols), dtype=torch.uint8),
            weight.new_empty((rows, groups), dtype=scale_dtype),
            weight.new_empty((rows, groups), dtype=torch.uint8),
            weight.new_empty((cols,), dtype=torch.int32),
            weight.new_empty((3,), dtype=torch.float64, device="cpu"))


@torch.library.register_fake("quantcore::gptq_inverse_factor")
def _gptq_inverse_factor_fake(hessian, damp, block_size=256):
    return torch.empty_like(hessian, memory_format=torch.contiguous_format)


_GGUF_SIZES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
               10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}


@torch.library.register_fake("quantcore::gguf_quantize")
def _gguf_quantize_fake(x, ggml_type, importance=None):
    block, nbytes = _GGUF_SIZES.get(int(ggml_type), (0, 0))
    _check(block > 1, f"quantcore.gguf_quantize: ggml type {ggml_type} is not supported")
    _check(x.dim() == 2 and x.shape[1] % block == 0, "quantcore.gguf_quantize: x must be [rows, n], n a multiple "
           f"of {block}")
    return x.new_empty((x.shape[0], x.shape[1] // block * nbytes), dtype=torch.uint8)


@torch.library.register_fake("quantcore::gguf_dequantize")
def _gguf_dequantize_fake(data, ggml_type, n):
    block, nbytes = _GGUF_SIZES.get(int(ggml_type), (0, 0))
    _check(block > 0 and n % block == 0, f"quantcore.gguf_dequantize: bad ggml type {ggml_type} or n {n}")
    return data.new_empty((data.shape[0], n), dtype=torch.float32)


@torch.library.register_fake("quantcore::fake_quantize_groups")
def _fake_quantize_groups_fake(weight, col_scale, clip, bits, group_size, symmetric, scale_dtype):
    return weight.new_empty(weight.shape, dtype=torch.float32)


@torch.library.register_fake("quantcore::awq_search_scale")
def _awq_search_scale_fake(weight, hessian, x_mean, prev_absmax, bits, group_size, symmetric, n_grid,
                           duo_scaling, max_abs, scale_dtype):
    return (weight.new_empty((weight.shape[1],), dtype=torch.float32),
            weight.new_empty((n_grid,), dtype=torch.float64, device="cpu"))


@torch.library.register_fake("quantcore::awq_search_clip")
def _awq_search_clip_fake(weight, hessian, bits, group_size, symmetric, n_grid, max_shrink, scale_dtype):
    rows, cols = weight.shape
    groups = 1 if group_size == -1 else cols // group_size
    return weight.new_empty((rows, groups), dtype=torch.float32)


@torch.library.register_fake("quantcore::dequantize_packed")
def _dequantize_packed_fake(qweight, scales, zeros, bits, group_size, dtype):
    return qweight.new_empty((qweight.shape[0], qweight.shape[1] * 32 // bits), dtype=dtype)


@torch.library.register_fake("quantcore::qgemm_tc")
def _qgemm_tc_fake(x, codes, scales, zeros, bias):
    _check(codes.dim() == 2 and scales.dim() == 2, "quantcore.qgemm_tc: codes and scales must be 2-D")
    n, k = codes.shape[0] * 32, codes.shape[1] // 4
    _check(x.dim() == 2 and x.shape[1] == k, f"quantcore.qgemm_tc: x must be [M, {k}]")
    return x.new_empty((x.shape[0], n))


@torch.library.register_fake("quantcore::qat_fake_quantize")
def _qat_fake_quantize_fake(x, scale, zero, bits, group_size, grid_dtype=None, grad_factor=1.0):
    _check(x.dim() == 2 and group_size > 0 and x.shape[1] % group_size == 0,
           "quantcore.qat_fake_quantize: x must be 2-D with group_size dividing its columns")
    return torch.empty_like(x)


@torch.library.register_fake("quantcore::qat_fake_quantize_backward")
def _qat_fake_quantize_backward_fake(grad, x, scale, zero, bits, group_size, grid_dtype=None, grad_factor=1.0):
    return (torch.empty_like(x), scale.new_empty(scale.shape, dtype=torch.float32),
            scale.new_empty(scale.shape, dtype=torch.float32))


@torch.library.register_fake("quantcore::fake_quantize_per_token")
def _fake_quantize_per_token_fake(x, bits, symmetric):
    _check(x.dim() >= 1 and x.shape[-1] > 0, "quantcore.fake_quantize_per_token: x must be [..., features]")
    return torch.empty_like(x)


@torch.library.register_fake("quantcore::gptq_hessian_update")
def _gptq_hessian_update_fake(hessian: torch.Tensor, x: torch.Tensor, samples_seen: int) -> int:
    # H is updated in place; the result is the new sample count (rows of x, flattened).
    _check(hessian.dim() == 2 and hessian.shape[0] == hessian.shape[1], "quantcore.gptq_hessian_update: "
           "hessian must be square")
    _check(x.shape[-1] == hessian.shape[0], "quantcore.gptq_hessian_update: inputs and H disagree on features")
    rows = x.numel() // max(1, x.shape[-1])
    return samples_seen + rows
