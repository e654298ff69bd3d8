"""Perplexity and quantization time of a real model: RTN vs GPTQ vs AWQ vs AWQ->GPTQ (issue 4).

Run: python benchmarks/bench_awq_quality.py --model gemma3   (after scripts/prepare_assets.py --gemma3)
Same texts as bench_gptq_quality.py: evaluation on the first half of the Lee
corpus, calibration (--samples windows of --seq-len tokens) from the disjoint
second half; every calibrated method gets the same windows. GPTQ runs with
act-order and true-sequential (as in the GPTQ table); AWQ with its defaults
(20-point scale grid, clip search); AWQ->GPTQ is AWQConfig(then_gptq=True,
act_order=True). Prints a Markdown table with each method's perplexity, its
increase over float as a fraction of RTN's, and the time to quantize the model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _real_model  # noqa: E402  (benchmarks/_real_model.py)
import quantcore  # noqa: E402
from quantcore import eval as qe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["gemma3", "smollm2"], default="gemma3")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    ap.add_argument("--methods", nargs="+", default=["rtn", "gptq", "awq", "awq+gptq"],
                    choices=["rtn", "gptq", "awq", "awq-duo", "awq+gptq"])
    ap.add_argument("--eval-windows", type=int, default=0, help="windows to score (0: the whole evaluation half)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rm = _real_model.load(args.model)
    base, tok, evaluation, calibration_text, bos, group = (
        rm.model, rm.tokenizer, rm.evaluation, rm.calibration_text, rm.bos, rm.group_size)
    windows = args.eval_windows or evaluation.numel() // args.seq_len

    def ppl(m):
        return qe.perplexity(m, evaluation, seq_len=args.seq_len, max_windows=windows,
                             bos_token_id=bos, progress=False)

    def config(method, bits):
        common = dict(bits=bits, group_size=group)
        calib = dict(n_samples=args.samples, seq_len=args.seq_len)
        return {
            "rtn": lambda: quantcore.RTNConfig(**common),
            "gptq": lambda: quantcore.GPTQConfig(**common, **calib, act_order=True),
            "awq": lambda: quantcore.AWQConfig(**common, **calib),
            "awq-duo": lambda: quantcore.AWQConfig(**common, **calib, duo_scaling=True),
            "awq+gptq": lambda: quantcore.AWQConfig(**common, **calib, then_gptq=True, act_order=True),
        }[method]()

    base_ppl = ppl(base)
    print(f"{args.model}: float32 perplexity {base_ppl:.3f} ({windows} x {args.seq_len} tokens); "
          f"calibration {args.samples} x {args.seq_len} tokens; torch threads {torch.get_num_threads()}")
    print("| config | method | perplexity | increase / RTN's | quantize time s |\n|---|---|---|---|---|")
    rows = []
    for bits in args.bits:
        rtn_ppl = None
        for method in args.methods:
            m = copy.deepcopy(base)
            kwargs = {} if method == "rtn" else dict(calib=calibration_text, tokenizer=tok)
            t0 = time.perf_counter()
            quantcore.quantize_(m, config(method, bits), progress=False, **kwargs)
            secs = time.perf_counter() - t0
            value = ppl(m)
            del m
            if method == "rtn":
                rtn_ppl = value
            ratio = (value - base_ppl) / (rtn_ppl - base_ppl) if rtn_ppl and rtn_ppl > base_ppl else float("nan")
            name = f"W{bits} g{group}"
            rows.append({"config": name, "method": method, "ppl": value, "ratio": ratio, "seconds": secs})
            print(f"| {name} | {method} | {value:.3f} | {ratio:.2f} | {secs:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "float": base_ppl, "samples": args.samples,
                                         "seq_len": args.seq_len, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
