"""Perplexity of SmolLM2-135M: float vs RTN vs GPTQ (issue 3, preliminary).

Run: python benchmarks/bench_gptq_quality.py
Evaluation on the first half of the Lee corpus (16 windows x 512 tokens),
calibration (32 x 512 tokens) drawn from the disjoint second half.
"""

from __future__ import annotations

import copy
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import quantcore  # noqa: E402
from quantcore import eval as qe  # noqa: E402


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = quantcore.assets.demo_model_dir()
    text = quantcore.assets.demo_text_file().read_text()
    tok = AutoTokenizer.from_pretrained(d)
    base = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    ids = qe.token_ids(tok, text)
    half = ids.numel() // 2
    evaluation, calibration = ids[:half], ids[half:]

    def ppl(m):
        return qe.perplexity(m, evaluation, seq_len=512, max_windows=16, progress=False)

    base_ppl = ppl(base)
    print("| config | RTN ppl | GPTQ ppl | GPTQ increase / RTN increase | GPTQ time s |\n|---|---|---|---|---|")
    print(f"| float32 | {base_ppl:.2f} | | | |")
    for bits, gs in [(8, -1), (4, 64), (4, -1), (3, 64)]:
        m = copy.deepcopy(base)
        quantcore.quantize_(m, quantcore.RTNConfig(bits=bits, group_size=gs), progress=False)
        rtn = ppl(m)
        m = copy.deepcopy(base)
        t0 = time.perf_counter()
        quantcore.quantize_(m, quantcore.GPTQConfig(bits=bits, group_size=gs, n_samples=32, seq_len=512),
                            calib=calibration, progress=False)
        secs = time.perf_counter() - t0
        gptq = ppl(m)
        ratio = (gptq - base_ppl) / (rtn - base_ppl) if rtn > base_ppl else float("nan")
        name = f"W{bits} " + ("per-channel" if gs == -1 else f"g{gs}")
        print(f"| {name} | {rtn:.2f} | {gptq:.2f} | {ratio:.2f} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
