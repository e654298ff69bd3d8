"""quantize_ on tiny Hugging Face models (Llama, Qwen2, GPT-2) built from configs."""

from __future__ import annotations

import copy

import pytest
import torch

import quantcore
from quantcore import QuantLinear, RTNConfig

from conftest import make_tiny


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_8bit_logits_close_4bit_finite(tiny_model, input_ids):
    name, model = tiny_model
    ref = logits(model, input_ids)
    m8 = copy.deepcopy(model)
    report = quantcore.quantize_(m8, RTNConfig(bits=8, group_size=32), progress=False)
    out8 = logits(m8, input_ids)
    rel8 = float((out8 - ref).abs().max() / ref.abs().max())
    assert rel8 < 0.02, rel8
    n_linear = 7 * 2 if name != "gpt2" else 4 * 2
    assert len(report.layers) == n_linear
    assert all(isinstance(m, QuantLinear) for n, m in m8.named_modules() if n in {l.name for l in report.layers})
    m4 = copy.deepcopy(model)
    quantcore.quantize_(m4, RTNConfig(bits=4, group_size=32), progress=False)
    out4 = logits(m4, input_ids)
    assert torch.isfinite(out4).all()
    rel4 = float((out4 - ref).abs().max() / ref.abs().max())
    assert rel8 < rel4 < 0.5


def test_lm_head_skipped_by_default_and_includable(input_ids):
    model = make_tiny("llama")
    report = quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), progress=False)
    assert "lm_head" in report.skipped
    assert isinstance(model.lm_head, torch.nn.Linear)
    model = make_tiny("llama")
    report = quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), include=["*"], progress=False)
    assert isinstance(model.lm_head, QuantLinear)
    assert torch.isfinite(logits(model, input_ids)).all()


def test_include_exclude_patterns():
    model = make_tiny("llama")
    report = quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), include=["*.mlp.*"],
                                 exclude=["re:layers\\.1\\."], progress=False)
    names = {layer.name for layer in report.layers}
    assert names == {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                     "model.layers.0.mlp.down_proj"}
    with pytest.raises(TypeError, match="list of name patterns"):
        quantcore.quantize_(make_tiny("llama"), RTNConfig(group_size=32), include="*.mlp.*")


def test_report_contents():
    model = make_tiny("qwen2")
    report = quantcore.quantize_(model, RTNConfig(bits=4, group_size=32), progress=False)
    assert report.method == "rtn" and report.config["bits"] == 4
    assert report.model_bytes_after < report.model_bytes_before
    assert report.bytes_after < report.bytes_before / 5
    # 4-bit codes + fp16 scale per 32 weights + bias-free layers -> 4.5 bits per weight
    assert report.bits_per_weight == pytest.approx(4.5, abs=1e-6)
    assert all(0 < layer.rel_error < 0.2 for layer in report.layers)
    text = str(report)
    assert "bits/weight" in text and "MiB" in text
    d = report.to_dict()
    assert d["layers"][0]["name"] == report.layers[0].name


def test_bad_models_and_configs_leave_model_untouched():
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantcore.quantize_(torch.nn.Sequential(torch.nn.ReLU()), RTNConfig(), progress=False)
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantcore.quantize_(make_tiny("llama"), RTNConfig(group_size=32), include=["nothing"], progress=False)
    with pytest.raises(TypeError, match="config"):
        quantcore.quantize_(make_tiny("llama"), {"bits": 4})
    with pytest.raises(TypeError, match="Module"):
        quantcore.quantize_(42, RTNConfig())
    with pytest.raises(ValueError, match="out_dir"):  # a path is a checkpoint directory to stream
        quantcore.quantize_("model", RTNConfig())

    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="not divisible by group_size 48"):
        quantcore.quantize_(model, RTNConfig(group_size=48), progress=False)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="layers.1.mlp.down_proj: weight contains NaN"):
        quantcore.quantize_(model, RTNConfig(group_size=32), progress=False)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    after = model.state_dict()
    for k, v in before.items():
        if k != "model.layers.1.mlp.down_proj.weight":
            assert torch.equal(after[k], v), k


def test_bf16_model_runs_on_the_kernels(input_ids):
    model = make_tiny("llama", torch.bfloat16)
    ref = logits(model, input_ids).float()
    quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), progress=False)
    out = logits(model, input_ids).float()
    assert float((out - ref).abs().max() / ref.abs().max()) < 0.05
