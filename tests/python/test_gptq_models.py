"""GPTQ through quantize_ on tiny Llama / Qwen2 / GPT-2 models."""

from __future__ import annotations

import copy

import pytest
import torch

import quantcore
from quantcore import GPTQConfig, QuantLinear, RTNConfig
from quantcore.gptq import calibration_windows, find_decoder_layers

from conftest import make_tiny


def calib_ids(n=16, seq=32, seed=0):
    return torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed))


def logit_error(model, ref_logits, ids):
    with torch.no_grad():
        out = model(ids).logits
    return float((out - ref_logits).norm() / ref_logits.norm())


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2"])
def test_gptq_end_to_end_beats_rtn_and_round_trips(name, tmp_path):
    model = make_tiny(name)
    ids = calib_ids()
    held_out = calib_ids(4, 32, seed=9)
    with torch.no_grad():
        ref = model(held_out).logits
    m_rtn = copy.deepcopy(model)
    quantcore.quantize_(m_rtn, RTNConfig(bits=3, group_size=32), progress=False)
    m_gptq = copy.deepcopy(model)
    report = quantcore.quantize_(m_gptq, GPTQConfig(bits=3, group_size=32, n_samples=16, seq_len=32),
                                 calib=ids, progress=False)
    n_linear = 14 if name != "gpt2" else 8
    assert len(report.layers) == n_linear
    assert sum(isinstance(m, QuantLinear) for m in m_gptq.modules()) == n_linear
    assert all(0 <= layer.rel_error < 0.5 for layer in report.layers)
    e_rtn, e_gptq = logit_error(m_rtn, ref, held_out), logit_error(m_gptq, ref, held_out)
    assert e_gptq < e_rtn, (e_gptq, e_rtn)
    loaded = quantcore.load_quantized(quantcore.save_quantized(m_gptq, tmp_path / "q"))
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, m_gptq(held_out).logits)


def test_gptq_options_and_text_calibration(char_tokenizer):
    tok = char_tokenizer
    model = make_tiny("llama")
    text = "the quick brown fox jumps over the lazy dog " * 30
    cfg = GPTQConfig(bits=4, group_size=32, act_order=True, static_groups=True, sym=False, true_sequential=False,
                     n_samples=4, seq_len=64)
    report = quantcore.quantize_(model, cfg, calib=[text], tokenizer=tok, progress=False)
    assert report.method == "gptq" and len(report.layers) == 14
    w = calibration_windows([text], tok, 4, 64, seed=0)
    assert w.shape == (4, 64) and torch.equal(w, calibration_windows([text], tok, 4, 64, seed=0))


def test_gptq_bad_inputs():
    with pytest.raises(ValueError, match="static_groups"):
        GPTQConfig(act_order=True, group_size=128)
    GPTQConfig(act_order=True, group_size=-1)  # per channel: one group, fine
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="calibration data"):
        quantcore.quantize_(model, GPTQConfig(group_size=32), progress=False)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        quantcore.quantize_(model, GPTQConfig(group_size=32, seq_len=64), calib=torch.arange(10), progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        quantcore.quantize_(model, GPTQConfig(group_size=32), calib="some text", progress=False)
    with pytest.raises(TypeError, match="unexpected"):
        quantcore.quantize_(model, RTNConfig(group_size=32), calib=calib_ids(), progress=False)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    with pytest.raises(ValueError, match="decoder layers"):
        find_decoder_layers(torch.nn.Sequential(torch.nn.ReLU()))


def test_linears_outside_decoder_layers_fall_back_to_rtn_with_a_note():
    model = make_tiny("llama")
    report = quantcore.quantize_(model, GPTQConfig(bits=8, group_size=32, n_samples=4, seq_len=32),
                                 calib=calib_ids(4), include=["*"], progress=False)
    assert isinstance(model.lm_head, QuantLinear)
    assert "lm_head" in report.notes and "RTN" in report.notes["lm_head"]
    assert len(report.layers) == 15
