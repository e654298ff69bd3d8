"""Checkpoint formats (python/quantcore/formats/): GPTQ (v1 and v2), AWQ GEMM
and compressed-tensors pack-quantized, in and out.

Exactness is checked three ways: round trips (save -> load gives the same
codes, grids and logits); the layouts against reference packers written in
these tests from the documented layouts (GPTQ: AutoGPTQ / GPTQModel, AWQ:
AutoAWQ, whose packages do not install here without their CUDA builds); and
compressed-tensors against the `compressed-tensors` package itself (its
compressor decompresses our tensors, and we load what it compresses)."""

from __future__ import annotations

import json

import pytest
import torch

import quantcore
from quantcore import AWQConfig, GPTQConfig, QuantLinear, RTNConfig, formats

from conftest import make_tiny

IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def quantized(name="llama", cfg=None, calib=False):
    model = make_tiny(name)
    extra = {"calib": IDS.repeat(4, 1)} if calib else {}
    quantcore.quantize_(model, cfg or RTNConfig(bits=4, group_size=32), progress=False, **extra)
    return model


def layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def assert_same_model(a, b):
    la, lb = layers(a), layers(b)
    assert la.keys() == lb.keys()
    for n in la:
        x, y = la[n], lb[n]
        assert torch.equal(x.dequantize(torch.float32), y.dequantize(torch.float32)), n
        assert x.bits == y.bits and x.group_size == y.group_size
    with torch.no_grad():
        assert torch.equal(a(IDS).logits, b(IDS).logits)


CASES = [
    ("gptq", RTNConfig(bits=4, group_size=32, sym=True)),
    ("gptq_v2", RTNConfig(bits=4, group_size=32, sym=False)),
    ("gptq_v2", RTNConfig(bits=3, group_size=-1, sym=False)),
    ("gptq", RTNConfig(bits=8, group_size=64, sym=True)),
    ("gptq_v2", RTNConfig(bits=2, group_size=32, sym=False)),
    ("awq", RTNConfig(bits=4, group_size=32, sym=False)),
    ("awq", RTNConfig(bits=4, group_size=-1, sym=True)),
    ("compressed-tensors", RTNConfig(bits=4, group_size=32, sym=True)),
    ("compressed-tensors", RTNConfig(bits=3, group_size=32, sym=False)),
    ("compressed-tensors", RTNConfig(bits=8, group_size=-1, sym=False)),
]


@pytest.mark.parametrize("fmt,cfg", CASES, ids=[f"{f}-{c.bits}b-g{c.group_size}-{'sym' if c.sym else 'asym'}"
                                                for f, c in CASES])
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_round_trip_gives_the_same_model(fmt, cfg, name, tmp_path):
    model = quantized(name, cfg)
    out = quantcore.save_quantized(model, tmp_path / "q", format=fmt)
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert formats.detect_format(qcfg) == fmt
    assert_same_model(quantcore.load_quantized(out), model)


@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2", "compressed-tensors"])
def test_act_order_round_trip(fmt, tmp_path):
    model = quantized(cfg=GPTQConfig(bits=4, group_size=32, act_order=True, n_samples=8, seq_len=16), calib=True)
    assert any(m.perm is not None for m in layers(model).values())
    out = quantcore.save_quantized(model, tmp_path / "q", format=fmt)
    loaded = quantcore.load_quantized(out)
    assert_same_model(loaded, model)
    assert any(m.perm is not None for m in layers(loaded).values())


def test_gptq_config_records_the_solver_settings(tmp_path):
    cfg = GPTQConfig(bits=4, group_size=32, static_groups=True, true_sequential=False, percdamp=0.05,
                     n_samples=8, seq_len=16)
    out = quantcore.save_quantized(quantized(cfg=cfg, calib=True), tmp_path / "g", format="gptq_v2")
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (q["static_groups"], q["true_sequential"], q["damp_percent"], q["desc_act"]) == (True, False, 0.05, False)
    out = quantcore.save_quantized(quantized(cfg=RTNConfig(bits=4, group_size=32)), tmp_path / "r", format="gptq")
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (q["static_groups"], q["true_sequential"], q["damp_percent"]) == (False, True, 0.01)  # GPTQ's defaults


# ------------------------------------------------------------ reference layouts

def reference_gptq(codes, zeros, bits, v1):
    """AutoGPTQ's layout by explicit bit arithmetic: qweight [in*bits/32, out],
    value i of a column at bit bits*i of its bit stream; qzeros likewise along out."""
    def pack_stream(values):  # [n, m] ints -> int32 [n*bits/32, m], packing along dim 0
        n, m = values.shape
        words = torch.zeros(n * bits // 32, m, dtype=torch.int64)
        for i in range(n):
            for b in range(bits):
                bit = bits * i + b
                words[bit // 32] |= ((values[i].long() >> b) & 1) << (bit % 32)
        return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
    z = zeros.long() - (1 if v1 else 0)
    return pack_stream(codes.t()), pack_stream(z & ((1 << bits) - 1)).t().contiguous()


def reference_awq(values):
    """AutoAWQ's GEMM packing of [rows, cols] 4-bit values: column 8k + order[p] in nibble p."""
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    rows, cols = values.shape
    words = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for k in range(cols // 8):
        for p, c in enumerate(order):
            words[:, k] |= values[:, 8 * k + c].long() << (4 * p)
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


@pytest.mark.parametrize("bits,fmt", [(4, "gptq"), (3, "gptq_v2"), (2, "gptq"), (8, "gptq_v2")])
def test_gptq_tensors_follow_the_documented_layout(bits, fmt):
    from quantcore.formats import gptq

    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (32, 64), generator=g, dtype=torch.uint8)
    scales = torch.rand(32, 2, generator=g).half() + 0.01
    zeros = torch.randint(1, 1 << bits, (32, 2), generator=g, dtype=torch.uint8)
    layer = QuantLinear.from_codes(codes, scales, zeros, None, bits=bits, group_size=32)
    t = gptq.export_layer("l", layer, fmt)
    qweight, qzeros = reference_gptq(codes, zeros, bits, v1=fmt == "gptq")
    assert torch.equal(t["l.qweight"], qweight) and torch.equal(t["l.qzeros"], qzeros)
    assert torch.equal(t["l.scales"], scales.t()) and torch.equal(t["l.g_idx"], torch.arange(64, dtype=torch.int32) // 32)
    back = gptq.import_layer("l", t.get, {"bits": bits, "group_size": 32, "sym": False, "checkpoint_format": fmt},
                             torch.float32)
    assert torch.equal(back.qweight, layer.qweight) and torch.equal(back.zeros, zeros)


def test_awq_tensors_follow_the_documented_layout():
    from quantcore.formats import awq

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (48, 64), generator=g, dtype=torch.uint8)
    scales = torch.rand(48, 2, generator=g).half() + 0.01
    zeros = torch.randint(0, 16, (48, 2), generator=g, dtype=torch.uint8)
    t = awq.export_layer("l", QuantLinear.from_codes(codes, scales, zeros, None, bits=4, group_size=32))
    assert torch.equal(t["l.qweight"], reference_awq(codes.t()))
    assert torch.equal(t["l.qzeros"], reference_awq(zeros.t()))
    # The unpack order AutoAWQ documents: [0, 4, 1, 5, 2, 6, 3, 7].
    word = t["l.qweight"][0, 0].item() & 0xFFFFFFFF
    nibbles = [(word >> (4 * p)) & 0xF for p in range(8)]
    assert [nibbles[p] for p in [0, 4, 1, 5, 2, 6, 3, 7]] == codes[:8, 0].tolist()


# ------------------------------------------------------------ compressed-tensors, against its own package

ct = pytest.importorskip("compressed_tensors")


def ct_scheme(qcfg):
    from compressed_tensors.quantization import QuantizationConfig

    parsed = QuantizationConfig.model_validate(qcfg)
    return parsed.config_groups["group_0"]


@pytest.mark.parametrize("bits,group,sym", [(4, 32, True), (4, 32, False), (3, -1, False), (8, 64, True)])
def test_compressed_tensors_package_decompresses_our_tensors(bits, group, sym, tmp_path):
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    model = quantized(cfg=RTNConfig(bits=bits, group_size=group, sym=sym))
    out = quantcore.save_quantized(model, tmp_path / "q", format="compressed-tensors")
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme = ct_scheme(qcfg)
    assert "lm_head" in qcfg["ignore"]
    from safetensors.torch import load_file

    tensors = load_file(str(out / "model.safetensors"))
    for name, layer in layers(model).items():
        local = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        local.pop("bias", None)
        weight = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
        assert weight.dtype == layer.scales.dtype  # the package dequantizes in the scales' dtype
        assert torch.equal(weight, layer.dequantize(weight.dtype)), name


def test_we_load_what_the_compressed_tensors_package_compresses(tmp_path):
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    model = quantized(cfg=RTNConfig(bits=4, group_size=32, sym=False))
    out = quantcore.save_quantized(model, tmp_path / "q", format="compressed-tensors")
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme = ct_scheme(qcfg)
    for name, layer in layers(model).items():
        w = layer.dequantize(torch.float32)
        zp_signed = layer.zeros.to(torch.int8) - 8  # the package's signed zero points
        state = {"weight": w, "weight_scale": layer.scales.float(), "weight_zero_point": zp_signed}
        theirs = PackedQuantizationCompressor.compress(state, scheme)
        ours = formats.compressed_tensors.export_layer(name, layer)
        assert torch.equal(theirs["weight_packed"], ours[f"{name}.weight_packed"]), name
        assert torch.equal(theirs["weight_zero_point"], ours[f"{name}.weight_zero_point"]), name
        assert torch.equal(theirs["weight_packed"], pack_to_int32(ops_signed(layer), 4))
        back = formats.compressed_tensors.import_layer(
            name, lambda k: {f"{name}.{kk}": v for kk, v in theirs.items()}.get(k), qcfg, torch.float32)
        assert torch.equal(back.qweight, layer.qweight) and torch.equal(back.zeros, layer.zeros)


def ops_signed(layer):
    return (quantcore.ops.unpack(layer.qweight, layer.bits).to(torch.int16) - (1 << (layer.bits - 1))).to(torch.int8)


def test_gptq_format_key_as_optimum_writes_it(tmp_path):
    """optimum names the zero convention `format` (no `checkpoint_format`); AutoGPTQ
    writes neither (v1)."""
    model = quantized(cfg=RTNConfig(bits=4, group_size=32, sym=False))
    out = quantcore.save_quantized(model, tmp_path / "q", format="gptq_v2")
    cfg_file = out / "config.json"
    cfg = json.loads(cfg_file.read_text())
    assert cfg["quantization_config"]["format"] == "gptq_v2"
    del cfg["quantization_config"]["checkpoint_format"]
    cfg_file.write_text(json.dumps(cfg))
    assert formats.detect_format(cfg["quantization_config"]) == "gptq_v2"
    assert_same_model(quantcore.load_quantized(out), model)


def test_transformers_accepts_our_quantization_configs(tmp_path):
    import transformers

    model = quantized(cfg=RTNConfig(bits=4, group_size=32, sym=True))
    for fmt, cls in [("gptq", "GPTQConfig"), ("awq", "AwqConfig"), ("compressed-tensors", "CompressedTensorsConfig")]:
        out = quantcore.save_quantized(model, tmp_path / fmt, format=fmt)
        qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
        parsed = getattr(transformers, cls).from_dict(dict(qcfg))
        assert str(getattr(parsed.quant_method, "value", parsed.quant_method)) == qcfg["quant_method"]
        if fmt != "compressed-tensors":
            assert (parsed.bits, parsed.group_size) == (4, 32)


# ------------------------------------------------------------ what cannot be stored, and bad checkpoints

def test_layers_a_format_cannot_store_raise_clearly(tmp_path):
    zero_zero = QuantLinear.from_codes(torch.zeros(32, 64, dtype=torch.uint8), torch.ones(32, 2).half(),
                                       torch.zeros(32, 2, dtype=torch.uint8), None, bits=4, group_size=32)
    model = torch.nn.Sequential(zero_zero)
    with pytest.raises(formats.ExportError, match="gptq_v2"):
        quantcore.save_quantized(model, tmp_path / "a", format="gptq")
    quantcore.save_quantized(model, tmp_path / "b", format="gptq_v2")  # v2 stores it
    with pytest.raises(formats.ExportError, match="4"):
        quantcore.save_quantized(quantized(cfg=RTNConfig(bits=3, group_size=32)), tmp_path / "c", format="awq")
    with pytest.raises(formats.ExportError, match="float16"):
        quantcore.save_quantized(quantized(cfg=RTNConfig(bits=4, group_size=32, scale_dtype=torch.float32)),
                                 tmp_path / "d", format="gptq")
    awq_model = quantized("gpt2", AWQConfig(bits=4, group_size=32, n_samples=4, seq_len=16, n_grid=4, clip=False),
                          calib=True)
    assert any(m.input_scale is not None for m in layers(awq_model).values())  # GPT-2's c_proj after GELU
    with pytest.raises(formats.ExportError, match="input_scale"):
        quantcore.save_quantized(awq_model, tmp_path / "e", format="awq")
    with pytest.raises(ValueError, match="unknown format"):
        quantcore.save_quantized(model, tmp_path / "f", format="exl2")
    assert not (tmp_path / "a").exists() and not (tmp_path / "f").exists()


def test_bad_checkpoints_raise_clearly(tmp_path):
    model = quantized()
    out = quantcore.save_quantized(model, tmp_path / "q", format="gptq")
    cfg_file = out / "config.json"
    good = cfg_file.read_text()
    cfg_file.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        quantcore.load_quantized(out)
    cfg = json.loads(good)
    cfg["quantization_config"]["quant_method"] = "exl2"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown quant_method"):
        quantcore.load_quantized(out)
    cfg["quantization_config"]["quant_method"] = "gptq"
    cfg["quantization_config"]["checkpoint_format"] = "marlin"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="checkpoint_format"):
        quantcore.load_quantized(out)
    cfg_file.write_text(good)
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="safetensors|truncated|corrupt"):
        quantcore.load_quantized(out)
    weights.unlink()
    with pytest.raises(FileNotFoundError):
        quantcore.load_quantized(out)
    cfg_file.unlink()
    with pytest.raises(FileNotFoundError):
        quantcore.load_quantized(out)


def test_compressed_tensors_other_formats_refused_for_every_group(tmp_path):
    out = quantcore.save_quantized(quantized(), tmp_path / "c", format="compressed-tensors")
    cfg_file = out / "config.json"
    cfg = json.loads(cfg_file.read_text())
    groups = cfg["quantization_config"]["config_groups"]
    # A by-name group (not the "Linear" fallback) in another compressed-tensors format.
    groups["group_1"] = dict(groups["group_0"], targets=["re:.*mlp.up_proj$"], format="marlin-24")
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="up_proj: only the 'pack-quantized'.*marlin-24"):
        quantcore.load_quantized(out)


@pytest.mark.skipif(not (torch.cuda.is_available() and quantcore._C.cuda_kernels),
                    reason="needs a CUDA GPU and a build with QUANTCORE_ENABLE_CUDA=ON")
@pytest.mark.parametrize("fmt", ["gptq", "awq", "compressed-tensors"])
def test_loaded_checkpoints_run_on_cuda(fmt, tmp_path):
    model = quantized(cfg=RTNConfig(bits=4, group_size=32, sym=fmt != "awq"))
    loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q", format=fmt), device="cuda",
                                      dtype=torch.bfloat16)
    ref = quantcore.load_quantized(tmp_path / "q", dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS.cuda()).logits.float().cpu(), ref(IDS).logits.float(),
                                   rtol=3e-2, atol=3e-2)
