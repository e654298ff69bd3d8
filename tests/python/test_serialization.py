"""save_quantized / load_quantized: identical logits and tokens, atomic writes, bad paths."""

from __future__ import annotations

import json

import pytest
import torch

import quantcore
from quantcore import QuantLinear, RTNConfig

from conftest import make_tiny


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("sym", [True, False])
def test_save_load_identical_logits_and_generation(tiny_model, input_ids, tmp_path, sym):
    name, model = tiny_model
    quantcore.quantize_(model, RTNConfig(bits=4, group_size=32, sym=sym), progress=False)
    out_dir = quantcore.save_quantized(model, tmp_path / "q")
    assert (out_dir / "model.safetensors").is_file()
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "quantcore"
    loaded = quantcore.load_quantized(out_dir)
    assert type(loaded) is type(model)
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == sum(
        isinstance(m, QuantLinear) for m in model.modules())
    assert torch.equal(logits(loaded, input_ids), logits(model, input_ids))
    gen_kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(model.generate(input_ids[:1], **gen_kwargs), loaded.generate(input_ids[:1], **gen_kwargs))


def test_bf16_model_and_quantized_lm_head(input_ids, tmp_path):
    model = make_tiny("llama", torch.bfloat16)
    quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), include=["*"], progress=False)
    loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q"))
    assert isinstance(loaded.lm_head, QuantLinear)
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(logits(loaded, input_ids), logits(model, input_ids))


def test_tokenizer_and_side_files_are_copied(tmp_path):
    src = tmp_path / "src"
    model = make_tiny("gpt2")
    model.save_pretrained(src)
    (src / "tokenizer.json").write_text('{"fake": true}')
    (src / "merges.txt").write_text("#version: 0.2\n")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), progress=False)
    out = quantcore.save_quantized(model, tmp_path / "q")
    assert (out / "tokenizer.json").read_text() == '{"fake": true}'
    assert (out / "merges.txt").is_file()
    assert (out / "generation_config.json").is_file()


def test_existing_directory_is_refused_then_replaced_atomically(tmp_path, input_ids):
    model = make_tiny("llama")
    quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), progress=False)
    target = tmp_path / "q"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        quantcore.save_quantized(model, target)
    assert (target / "keep.txt").read_text() == "old"
    quantcore.save_quantized(model, target, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no temp dirs left behind


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    model = make_tiny("llama")
    quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), progress=False)
    import quantcore.serialization as ser

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ser, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        quantcore.save_quantized(model, tmp_path / "q")
    assert list(tmp_path.iterdir()) == []


def test_plain_module_round_trip_with_model_argument(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    quantcore.quantize_(net, RTNConfig(bits=4, group_size=32, sym=False), progress=False)
    out = quantcore.save_quantized(net, tmp_path / "net")
    with pytest.raises(ValueError, match="pass model="):
        quantcore.load_quantized(out)
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    loaded = quantcore.load_quantized(out, model=fresh)
    x = torch.randn(3, 64)
    assert torch.equal(loaded(x), net(x))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        quantcore.load_quantized(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "exl2"}}))
    with pytest.raises(ValueError, match="unknown quant_method 'exl2'"):
        quantcore.load_quantized(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(ValueError, match="which model class"):
        quantcore.load_quantized(tmp_path)
    with pytest.raises(ValueError, match="no QuantLinear"):
        quantcore.save_quantized(make_tiny("llama"), tmp_path / "x")
