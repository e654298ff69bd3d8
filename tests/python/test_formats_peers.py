"""Our GPTQ and AWQ checkpoints against the peers' own code: AutoGPTQ 0.7.1's
QuantLinear (pack and its CPU dequantizing forward) and AutoAWQ 0.2.9's
WQLinear_GEMM.from_linear and dequantize_gemm. scripts/setup.sh installs both
with --no-deps into .peer-code/ (not importable as packages here: AutoGPTQ
needs transformers < 5 and AutoAWQ `datasets`), and these tests load the
single module files they need."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from quantcore import QuantLinear
from quantcore.formats import awq, gptq

PEER = Path(__file__).resolve().parents[2] / ".peer-code"
pytestmark = pytest.mark.skipif(not (PEER / "awq").is_dir() or not (PEER / "auto_gptq").is_dir(),
                                reason="peer code not installed (scripts/setup.sh installs it into .peer-code/)")


def load_file(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, PEER / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def autoawq():
    # Namespace stubs so that awq/__init__.py (which imports `datasets`) never runs.
    for name, rel in [("awq", "awq"), ("awq.modules", "awq/modules"), ("awq.modules.linear", "awq/modules/linear"),
                      ("awq.utils", "awq/utils")]:
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(PEER / rel)]
            sys.modules[name] = stub
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.utils import packing_utils

    return WQLinear_GEMM, packing_utils


@pytest.fixture(scope="module")
def autogptq():
    return load_file("autogptq_qlinear_cuda_old", "auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py")


def random_layer(bits, out_f=64, in_f=128, group=32, zero_lo=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (out_f, in_f), generator=g, dtype=torch.uint8)
    scales = (torch.rand(out_f, in_f // group, generator=g) * 0.02 + 0.001).half()
    zeros = torch.randint(zero_lo, 1 << bits, (out_f, in_f // group), generator=g, dtype=torch.uint8)
    return QuantLinear.from_codes(codes, scales, zeros, None, bits=bits, group_size=group, dtype=torch.float16)


def test_autoawq_packs_what_we_write_and_dequantizes_it_like_us(autoawq):
    WQLinear_GEMM, packing_utils = autoawq
    layer = random_layer(4, zero_lo=0)
    ours = awq.export_layer("l", layer)
    lin = torch.nn.Linear(128, 64, bias=False).half()
    lin.weight.data = layer.dequantize(torch.float16)
    theirs = WQLinear_GEMM.from_linear(lin, 4, 32, scales=layer.scales.t().contiguous(),
                                       zeros=layer.zeros.t().contiguous().int())
    assert torch.equal(theirs.qweight, ours["l.qweight"]) and torch.equal(theirs.qzeros, ours["l.qzeros"])
    w = packing_utils.dequantize_gemm(ours["l.qweight"], ours["l.qzeros"], ours["l.scales"], 4, 32)
    assert torch.equal(w.t(), layer.dequantize(torch.float16))
    back = awq.import_layer("l", {k: getattr(theirs, k.split(".")[1]) for k in ours}.get, {"bits": 4, "group_size": 32},
                            torch.float16)
    assert torch.equal(back.qweight, layer.qweight) and torch.equal(back.zeros, layer.zeros)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_autogptq_packs_what_we_write_and_dequantizes_it_like_us(autogptq, bits):
    layer = random_layer(bits)
    ours = gptq.export_layer("l", layer, "gptq")
    lin = torch.nn.Linear(128, 64, bias=False)
    lin.weight.data = layer.dequantize(torch.float32)
    q = autogptq.QuantLinear(bits=bits, group_size=32, infeatures=128, outfeatures=64, bias=False)
    q.pack(lin, layer.scales.float(), layer.zeros.float(), torch.arange(128) // 32)
    assert torch.equal(q.qweight, ours["l.qweight"]) and torch.equal(q.qzeros, ours["l.qzeros"])
    if bits in (2, 4, 8):  # its CPU forward (the reader of checkpoint_format "gptq") for these widths
        q.scales.data = ours["l.scales"]
        w = q(torch.eye(128, dtype=torch.float16)).t()
        assert torch.equal(w, layer.dequantize(torch.float16))
    cfg = {"bits": bits, "group_size": 32, "sym": False, "checkpoint_format": "gptq"}
    back = gptq.import_layer("l", {"l.qweight": q.qweight, "l.qzeros": q.qzeros, "l.scales": q.scales.half(),
                                   "l.g_idx": q.g_idx}.get, cfg, torch.float16)
    assert torch.equal(back.qweight, layer.qweight) and torch.equal(back.zeros, layer.zeros)


def test_gptq_v1_zero_of_zero_reads_as_gptqmodel_writes_it():
    """GPTQModel writes "gptq" qzeros as raw words minus 0x11111111 (4-bit), so a zero
    of 0 borrows from the next field; we read that back exactly (test layout from
    GPTQModel's convert_gptq_v2_to_v1_format_module)."""
    layer = random_layer(4, zero_lo=0, seed=3)
    raw = gptq.export_layer("l", layer, "gptq_v2")
    assert bool((layer.zeros == 0).any())
    words = (raw["l.qzeros"].to(torch.int64) - 0x11111111) & 0xFFFFFFFF
    v1 = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)
    cfg = {"bits": 4, "group_size": 32, "sym": False, "checkpoint_format": "gptq"}
    back = gptq.import_layer("l", {**raw, "l.qzeros": v1}.get, cfg, torch.float16)
    assert torch.equal(back.zeros, layer.zeros)
