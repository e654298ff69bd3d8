"""The tensor-core layout of 4-bit weights (python/quantcore/nn/tc_layout.py):
exact round trip, and every word / scale where the documented formula says."""

from __future__ import annotations

import pytest
import torch

import quantcore
from quantcore.nn.tc_layout import from_tc_layout, tc_layout_supported, to_tc_layout


def canonical(n, k, group, sym, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scales = torch.rand(n, k // group, generator=g).half()
    zeros = None if sym else torch.randint(0, 16, (n, k // group), generator=g, dtype=torch.uint8)
    return codes, quantcore.ops.pack(codes, 4, 32), scales, zeros


@pytest.mark.parametrize("n,k,group,sym", [(32, 64, 32, True), (96, 192, 64, False), (160, 640, 640, False)])
def test_round_trip_is_exact(n, k, group, sym):
    _, qweight, scales, zeros = canonical(n, k, group, sym)
    codes, s_tc, z_tc = to_tc_layout(qweight, scales, zeros)
    assert codes.shape == (n // 32, 4 * k) and codes.dtype == torch.int32
    assert s_tc.shape == (k // group, n) and s_tc.dtype == scales.dtype
    back = from_tc_layout(codes, s_tc, z_tc)
    assert torch.equal(back[0], qweight) and torch.equal(back[1], scales)
    assert (back[2] is None) if sym else torch.equal(back[2], zeros)


def test_every_nibble_and_scale_is_where_the_layout_says():
    n, k, group = 64, 128, 32
    codes_nk, qweight, scales, zeros = canonical(n, k, group, sym=False, seed=3)
    codes, s_tc, z_tc = to_tc_layout(qweight, scales, zeros)
    words = codes.to(torch.int64) & 0xFFFFFFFF
    for s in range(n // 32):
        for kt in range(k // 32):
            for lane in range(32):
                g, t = divmod(lane, 4)
                for w in range(4):
                    ks, np_ = divmod(w, 2)
                    word = int(words[s, kt * 128 + lane * 4 + w])
                    for pos in range(8):
                        e, rest = divmod(pos, 4)
                        h, hk = divmod(rest, 2)
                        nn = 32 * s + 16 * np_ + 8 * h + g
                        kk = 32 * kt + 16 * ks + 8 * hk + 2 * t + e
                        assert (word >> (4 * pos)) & 0xF == int(codes_nk[nn, kk])
    assert torch.equal(s_tc, scales.t()) and torch.equal(z_tc, zeros.t())


def test_unsupported_shapes_are_refused():
    assert tc_layout_supported(64, 128, 4, 32) and not tc_layout_supported(64, 96, 4, 32)
    assert not tc_layout_supported(48, 128, 4, 32) and not tc_layout_supported(64, 128, 8, 32)
    _, qweight, scales, _ = canonical(48, 128, 32, True)
    with pytest.raises(ValueError, match="N % 32"):
        to_tc_layout(qweight, scales, None)
    with pytest.raises(TypeError, match="int32"):
        to_tc_layout(qweight.float(), scales, None)
