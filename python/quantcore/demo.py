"""The main job: quantize a small real model in place and compare it with the float one.

``python -m quantcore demo`` loads SmolLM2-135M-Instruct (prepared by the set-up,
no download), quantizes a copy per configuration with round-to-nearest, and
prints model size, perplexity on real text, agreement with the float model's
next-token predictions, decode speed, and a generated sample; finally it
saves one quantized model, loads it back and checks the logits are identical.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from . import eval as qc_eval
from .assets import demo_model_dir, demo_text_file
from .config import RTNConfig
from .quantize import model_bytes, quantize_
from .serialization import load_quantized, save_quantized

DEFAULT_CONFIGS = (
    ("W8 g64", RTNConfig(bits=8, group_size=64)),
    ("W4 g64", RTNConfig(bits=4, group_size=64)),
    ("W4 g64 mse-clip", RTNConfig(bits=4, group_size=64, mse_clip=True)),
)
PROMPT = "The capital of France is"


@dataclass
class Row:
    name: str
    mib: float
    bpw: Optional[float]
    ppl: float
    top1: float
    ms_per_token: float
    prefill_tok_s: float
    quant_s: float
    sample: str


def _decode_speed(model, tok, n_tokens: int) -> tuple:
    ids = tok(PROMPT, return_tensors="pt").input_ids
    kwargs = dict(do_sample=False, pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=2, **kwargs)  # warm-up
        dt = float("inf")
        for _ in range(3):  # best of three: robust to a busy machine
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=n_tokens, min_new_tokens=n_tokens, **kwargs)
            dt = min(dt, time.perf_counter() - t0)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip().replace("\n", " ")
    return 1000.0 * dt / n_tokens, text


def _top1(model, windows: torch.Tensor, ref_top1: torch.Tensor) -> float:
    with torch.no_grad():
        pred = model(windows).logits.argmax(-1)
    return float((pred == ref_top1).float().mean())


def run_demo(
    model_dir: Optional[Path] = None,
    text_file: Optional[Path] = None,
    configs: Sequence = DEFAULT_CONFIGS,
    seq_len: int = 256,
    windows: int = 8,
    gen_tokens: int = 32,
    progress: bool = True,
) -> List[Row]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir or demo_model_dir())
    text_file = Path(text_file or demo_text_file())
    print(f"model: {model_dir}\ntext:  {text_file}\nthreads: {torch.get_num_threads()}, "
          f"CPU kernels: {_isa()}\n", flush=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = qc_eval.token_ids(tok, text_file.read_text())
    n = min(windows, ids.numel() // seq_len)
    eval_windows = ids[: n * seq_len].view(n, seq_len)
    with torch.no_grad():
        ref_top1 = base(eval_windows[:2]).logits.argmax(-1)

    def timed_ppl(model):
        t0 = time.perf_counter()
        ppl = qc_eval.perplexity(model, ids, seq_len=seq_len, max_windows=n, progress=progress)
        return ppl, n * seq_len / (time.perf_counter() - t0)

    rows = []
    ms, sample = _decode_speed(base, tok, gen_tokens)
    ppl, tok_s = timed_ppl(base)
    rows.append(Row("float32", model_bytes(base) / 2**20, None, ppl, 1.0, ms, tok_s, 0.0, sample))
    last = None
    for name, cfg in configs:
        model = copy.deepcopy(base)
        report = quantize_(model, cfg, progress=progress)
        ppl, tok_s = timed_ppl(model)
        ms, sample = _decode_speed(model, tok, gen_tokens)
        rows.append(Row(name, report.model_bytes_after / 2**20, report.bits_per_weight, ppl,
                        _top1(model, eval_windows[:2], ref_top1), ms, tok_s, report.seconds, sample))
        last = model
    _print_rows(rows, seq_len, n)

    if last is not None:
        with tempfile.TemporaryDirectory() as tmp:
            out = save_quantized(last, Path(tmp) / "quantized", tokenizer=tok)
            size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
            loaded = load_quantized(out)
            with torch.no_grad():
                same = torch.equal(loaded(eval_windows[:1]).logits, last(eval_windows[:1]).logits)
            print(f"\nsave_quantized -> {size:.1f} MiB on disk; load_quantized gives "
                  f"{'identical' if same else 'DIFFERENT'} logits")
            if not same:
                raise RuntimeError("save/load round trip changed the logits")
    return rows


def _isa() -> str:
    from . import cpu_isa

    return cpu_isa()


def _print_rows(rows: List[Row], seq_len: int, n: int) -> None:
    base = rows[0]
    print(f"\n{'config':<17} {'size MiB':>9} {'bits/w':>7} {'ppl':>8} {'top-1 agree':>12} "
          f"{'decode ms/tok':>14} {'prefill tok/s':>14} {'quant s':>8}")
    for r in rows:
        bpw = f"{r.bpw:7.3f}" if r.bpw is not None else f"{'32':>7}"
        print(f"{r.name:<17} {r.mib:9.1f} {bpw} {r.ppl:8.3f} {100 * r.top1:11.1f}% "
              f"{r.ms_per_token:7.1f} ({base.ms_per_token / r.ms_per_token:4.2f}x) "
              f"{r.prefill_tok_s:6.0f} ({r.prefill_tok_s / base.prefill_tok_s:4.2f}x) {r.quant_s:8.2f}")
    print(f"\n(perplexity: {n} windows x {seq_len} tokens of the Lee corpus; top-1: next-token "
          f"argmax equal to float32's; decode: greedy, batch 1; prefill: the perplexity forward "
          f"passes; bits/w of the quantized linear layers incl. scales; lm_head and embeddings "
          f"stay float32)")
    print("\nsamples (greedy, prompt: %r):" % PROMPT)
    for r in rows:
        print(f"  {r.name:<17} {r.sample[:100]}")
