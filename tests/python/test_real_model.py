"""A small real model (SmolLM2-135M, prepared by scripts/setup.sh) end to end."""

from __future__ import annotations

import copy
import os

import pytest
import torch

import quantcore
from quantcore import RTNConfig
from quantcore import eval as qc_eval


def _assets():
    try:
        return quantcore.assets.demo_model_dir(), quantcore.assets.demo_text_file()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            raise  # CI runs scripts/setup.sh, so the assets must be there
        pytest.skip(f"demo assets not prepared: {e}")


@pytest.fixture(scope="module")
def smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, text_file = _assets()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = qc_eval.token_ids(tok, text_file.read_text())[: 3 * 128]
    return tok, model, ids


def test_real_model_quality_at_8_and_4_bits(smollm):
    tok, model, ids = smollm
    ppl = qc_eval.perplexity(model, ids, seq_len=128, progress=False)
    assert 5 < ppl < 200
    m8 = copy.deepcopy(model)
    report = quantcore.quantize_(m8, RTNConfig(bits=8, group_size=64), progress=False)
    assert len(report.layers) == 30 * 7 and report.skipped == ["lm_head"]
    ppl8 = qc_eval.perplexity(m8, ids, seq_len=128, progress=False)
    assert abs(ppl8 - ppl) / ppl < 0.02, (ppl, ppl8)
    m4 = copy.deepcopy(model)
    quantcore.quantize_(m4, RTNConfig(bits=4, group_size=64), progress=False)
    ppl4 = qc_eval.perplexity(m4, ids, seq_len=128, progress=False)
    assert ppl < ppl4 < 2 * ppl, (ppl, ppl4)
    prompt = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = m8.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
    assert "Paris" in tok.decode(out[0])


def test_demo_main_job_runs(capsys):
    _assets()
    from quantcore.demo import run_demo

    rows = run_demo(configs=(("W8 g64", RTNConfig(bits=8, group_size=64)),), seq_len=64, windows=1,
                    gen_tokens=4, progress=False)
    out = capsys.readouterr().out
    assert "identical logits" in out and "W8 g64" in out
    assert rows[1].mib < rows[0].mib / 2
