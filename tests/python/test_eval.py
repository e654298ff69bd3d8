"""Perplexity windows and the `quantcore eval` command."""

from __future__ import annotations

import math

import pytest
import torch

import quantcore
from quantcore import RTNConfig
from quantcore import eval as qc_eval

from conftest import make_tiny


def manual_ppl(model, ids, seq_len):
    nll, count = 0.0, 0
    for b in range(0, ids.numel() - seq_len + 1, seq_len):
        w = ids[b:b + seq_len].unsqueeze(0)
        with torch.no_grad():
            logits = model(w).logits[0, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits, w[0, 1:], reduction="sum"))
        count += seq_len - 1
    return math.exp(nll / count)


def test_non_overlapping_windows_match_a_manual_loop():
    model = make_tiny("llama")
    ids = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(0))
    got = qc_eval.perplexity(model, ids, seq_len=64, progress=False)
    assert got == pytest.approx(manual_ppl(model, ids, 64), rel=1e-6)


def test_sliding_windows_score_every_token_once():
    model = make_tiny("gpt2")
    ids = torch.randint(0, 256, (150,), generator=torch.Generator().manual_seed(1))
    # stride 1 with seq_len 2: every token scored with exactly one token of context
    with torch.no_grad():
        logits = torch.cat([model(ids[i:i + 2].unsqueeze(0)).logits[0, :1] for i in range(149)])
    expected = math.exp(float(torch.nn.functional.cross_entropy(logits, ids[1:])))
    assert qc_eval.perplexity(model, ids, seq_len=2, stride=1, progress=False) == pytest.approx(expected, rel=1e-5)
    ppl = qc_eval.perplexity(model, ids, seq_len=64, stride=16, progress=False)
    assert math.isfinite(ppl)


def test_bad_arguments():
    model = make_tiny("llama")
    ids = torch.randint(0, 256, (50,))
    with pytest.raises(ValueError, match="fewer than one window"):
        qc_eval.perplexity(model, ids, seq_len=64, progress=False)
    with pytest.raises(ValueError, match="stride"):
        qc_eval.perplexity(model, ids, seq_len=16, stride=32, progress=False)
    with pytest.raises(ValueError, match="1-D"):
        qc_eval.perplexity(model, ids.view(5, 10), seq_len=4, progress=False)
    with pytest.raises(ValueError, match="text"):
        qc_eval.perplexity(model, object(), progress=False)


def test_eval_cli_on_a_saved_quantized_model(tmp_path, capsys, char_tokenizer):
    tok = char_tokenizer
    model = make_tiny("llama")
    quantcore.quantize_(model, RTNConfig(bits=8, group_size=32), progress=False)
    out = quantcore.save_quantized(model, tmp_path / "q", tokenizer=tok)
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    from quantcore.cli import main

    assert main(["eval", str(out), "--text", str(text), "--seq-len", "64"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "missing"), "--text", str(text)]) == 2


def test_bos_is_put_before_windows_and_calibration_when_the_tokenizer_adds_one(char_tokenizer):
    from tokenizers.processors import TemplateProcessing

    from quantcore.gptq import calibration_windows

    tok = char_tokenizer
    assert quantcore.eval.bos_token_id(tok) is None
    tok.add_special_tokens({"bos_token": "[BOS]"})
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", bos)])
    assert quantcore.eval.bos_token_id(tok) == bos
    text = "the quick brown fox jumps over the lazy dog " * 20
    windows = calibration_windows([text], tok, 4, 32, seed=0)
    assert windows.shape == (4, 32) and bool((windows[:, 0] == bos).all()) and not bool((windows[:, 1:] == bos).any())

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            seen.append(ids.clone())
            return type("Out", (), {"logits": torch.zeros(*ids.shape, 40)})()

    quantcore.eval.perplexity(Recorder(), tok, text, seq_len=16, max_windows=2, progress=False)
    assert all(int(w[0, 0]) == bos and w.shape == (1, 17) for w in seen)
