"""load_gguf(quantized=True): ggml blocks with an integer grid become QuantLinear
layers that dequantize to exactly ggml's values; the rest stays float."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import quantcore  # noqa: E402
from quantcore.gguf import GGMLType, GGUFReader  # noqa: E402
from quantcore.gguf.codes import MAPPABLE_TYPES, ggml_codes  # noqa: E402
from quantcore.nn import QuantLinear  # noqa: E402

from gguf_files import gemma3_q4_k_m  # noqa: E402
from test_gguf_export import ARCHS, IDS, _checkpoint, bpe_tokenizer_dir, spm_tokenizer_dir  # noqa: E402,F401

ALL_BLOCK_TYPES = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q2_K,
                   GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]


@pytest.mark.parametrize("t", ALL_BLOCK_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows,n", [(1, 256), (7, 512), (12, 768)])
def test_codes_dequantize_exactly_like_ggml(t, rows, n):
    g = torch.Generator().manual_seed(rows * n + int(t))
    x = torch.randn(rows, n, generator=g) * torch.rand(rows, 1, generator=g) * 3
    x[0, :16] = 0  # an all-zero sub-block (scale 0)
    data = torch.ops.quantcore.gguf_quantize(x, int(t), None)
    want = torch.ops.quantcore.gguf_dequantize(data, int(t), n)
    c = ggml_codes(data.numpy().tobytes(), t, rows, n)
    if t not in MAPPABLE_TYPES:
        assert c is None  # a float minimum per block: no integer zero point
        return
    assert c.codes.shape == (rows, n) and int(c.codes.max()) < (1 << c.bits)
    layer = QuantLinear.from_codes(c.codes, c.scales, None, None, bits=c.bits, group_size=c.group_size)
    assert torch.equal(layer.dequantize(torch.float32), want)
    xin = torch.randn(3, n, generator=g)
    assert torch.allclose(layer(xin), xin @ want.T, rtol=1e-4, atol=1e-4 * float(want.abs().max()) * n ** 0.5)


def test_codes_reject_wrong_sizes():
    data = torch.ops.quantcore.gguf_quantize(torch.randn(2, 256), int(GGMLType.Q6_K), None).numpy().tobytes()
    with pytest.raises(ValueError):
        ggml_codes(data[:-1], GGMLType.Q6_K, 2, 256)
    with pytest.raises(ValueError):
        ggml_codes(data, GGMLType.Q6_K, 2, 200)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("qtype", ["Q8_0", "Q6_K", "Q3_K_M"])
def test_quantized_load_keeps_the_file_grid(tmp_path, arch, qtype, bpe_tokenizer_dir, spm_tokenizer_dir):
    _, d = _checkpoint(tmp_path, arch, bpe_tokenizer_dir, spm_tokenizer_dir)
    path = tmp_path / "m.gguf"
    quantcore.export_gguf(d, path, qtype, progress=False)
    reader = GGUFReader(path)
    floats = quantcore.load_gguf(path, progress=False)
    quant = quantcore.load_gguf(path, quantized=True, progress=False)
    layers = {n: m for n, m in quant.named_modules() if isinstance(m, QuantLinear)}
    mappable = {t.name for t in reader.tensors if t.ggml_type in MAPPABLE_TYPES and len(t.shape) == 2
                and t.name != "token_embd.weight"}
    assert len(layers) == len(mappable) > 0
    float_weights = dict(floats.named_parameters())
    for name, layer in layers.items():
        # Bit for bit the weight the float load dequantized (Q/K rows reordered alike).
        assert torch.equal(layer.dequantize(torch.float32), float_weights[name + ".weight"].detach()), name
    with torch.no_grad():
        a, b = quant(IDS).logits, floats(IDS).logits
    assert float((a - b).norm() / b.norm()) < 1e-4
    # The QuantLinear model saves and loads in quantcore's own format.
    quantcore.save_quantized(quant, tmp_path / "qc")
    again = quantcore.load_quantized(tmp_path / "qc")
    with torch.no_grad():
        assert torch.allclose(again(IDS).logits, a, atol=1e-5, rtol=1e-5)


def test_llama_cpp_gemma3_q4_k_m_loads_quantized(tmp_path):
    path = gemma3_q4_k_m(tmp_path)
    if path is None:
        pytest.skip("llama.cpp's Gemma 3 GGUF wheel is not in the download cache")
    reader = GGUFReader(path)
    quant = quantcore.load_gguf(path, quantized=True, progress=False)
    layers = {n: m for n, m in quant.named_modules() if isinstance(m, QuantLinear)}
    # 640-wide rows fall back from Q4_K to Q5_0, so most of this file maps.
    mapped = [t.name for t in reader.tensors if t.ggml_type in MAPPABLE_TYPES and t.name.startswith("blk.")]
    assert len(layers) == len(mapped) > 0
    assert {t.ggml_type for t in reader.tensors if t.name in mapped} == {GGMLType.Q5_0, GGMLType.Q6_K, GGMLType.Q8_0}
    for t in mapped[:8]:
        layer = quant.get_submodule(quant_name(t))
        assert isinstance(layer, QuantLinear)
        assert torch.equal(layer.dequantize(torch.float32), reader.tensor(t)), t


def quant_name(gguf_name):
    return quantcore.gguf.arch.arch_by_gguf_name("gemma3").hf_name(gguf_name).rsplit(".", 1)[0]


def test_cli_export_info_and_eval_quantized(tmp_path, capsys, bpe_tokenizer_dir, spm_tokenizer_dir):
    from quantcore.cli import main

    _, d = _checkpoint(tmp_path, "llama", bpe_tokenizer_dir, spm_tokenizer_dir)
    text = tmp_path / "calib.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    out = tmp_path / "m.gguf"
    assert main(["export-gguf", str(d), "-o", str(out), "--type", "Q6_K", "--calib", str(text),
                 "--n-samples", "2", "--seq-len", "32"]) == 0
    assert out.exists()
    assert main(["info", str(out)]) == 0
    assert "Q6_K" in capsys.readouterr().out
    ppl = []
    for extra in ([], ["--gguf-quantized"]):
        assert main(["eval", str(out), "--tokenizer", str(d), "--text", str(text), "--seq-len", "32",
                     "--max-windows", "2", *extra]) == 0
        line = [ln for ln in capsys.readouterr().out.splitlines() if "perplexity" in ln][-1]
        ppl.append(float(line.split("perplexity")[1].split()[0].strip(":= ")))
    assert abs(ppl[0] - ppl[1]) < 1e-3 * ppl[0]
