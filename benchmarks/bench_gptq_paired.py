"""Per-window paired comparison of RTN and GPTQ on Gemma-3-270M (or SmolLM2-135M) (is a small
perplexity difference real?).

Run: python benchmarks/bench_gptq_paired.py [--bits 8 --group-size -1] [--no-guard] [--json FILE]
     [--rtn-for down_proj down_proj@12-18 ...]
Scores the 72 held-out windows of bench_gptq_quality.py one by one (BOS + 511
tokens each) for float, RTN, GPTQ with act-order and GPTQ without it (64 x 512
calibration tokens), and prints each perplexity and the mean per-token NLL
difference between methods with its paired standard error over windows.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _real_model  # noqa: E402  (benchmarks/_real_model.py)
import quantcore  # noqa: E402
from quantcore._targets import replace_module  # noqa: E402
from quantcore.calibration import find_decoder_layers  # noqa: E402


_GUARD = {"auto": "auto", "on": True, "off": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["gemma3", "smollm2"], default="gemma3")
    ap.add_argument("--samples", type=int, default=64, help="calibration windows of 512 tokens")
    ap.add_argument("--windows", type=int, default=0, help="evaluation windows to score (0: all)")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=-1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-guard", action="store_true", help="GPTQConfig(rtn_guard=False): GPTQ on every layer")
    ap.add_argument("--percdamp", type=float, default=0.01, help="GPTQConfig(percdamp=...)")
    ap.add_argument("--skip-first-tokens", type=int, default=0, help="GPTQConfig(skip_first_tokens=...)")
    ap.add_argument("--sink-weight", type=float, default=None,
                    help="GPTQConfig(sink_weight=...): weight of each window's first position in H (default: the config's)")
    ap.add_argument("--gptaq-alpha", type=float, default=0.0, help="GPTQConfig(gptaq_alpha=...): asymmetric calibration")
    ap.add_argument("--loss-guard", choices=["auto", "on", "off"], default="auto",
                    help="GPTQConfig(loss_guard=...): model-level RTN check by group (auto: at 8 bits)")
    ap.add_argument("--loss-guard-windows", type=int, default=16, help="GPTQConfig(loss_guard_windows=...)")
    ap.add_argument("--act-order-only", action="store_true", help="skip the GPTQ run without act-order")
    ap.add_argument("--rtn-for", nargs="+", default=[], metavar="KIND[@A-B]",
                    help="also score the act-order GPTQ model with RTN's codes in the linears named KIND "
                         "(e.g. down_proj), optionally only in decoder layers A..B-1; one model per spec")
    args = ap.parse_args()
    specs = [_parse_spec(spec) for spec in args.rtn_for]
    rm = _real_model.load(args.model)
    base, evaluation, calibration_text, bos, tok = rm.model, rm.evaluation, rm.calibration_text, rm.bos, rm.tokenizer
    windows = args.windows or evaluation.numel() // 512

    def nlls(m):
        out = []
        with torch.no_grad():
            for w in range(windows):
                # 511 scored tokens per window, after the BOS where the model expects one.
                x = (evaluation[w * 512: w * 512 + 512] if bos is None else
                     torch.cat([torch.tensor([bos]), evaluation[w * 512: w * 512 + 511]])).unsqueeze(0)
                logits = m(x).logits[0, :-1].float()
                out.append(float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")))
        return torch.tensor(out, dtype=torch.float64)

    res = {"float": nlls(base)}
    rtn_model = copy.deepcopy(base)
    quantcore.quantize_(rtn_model, quantcore.RTNConfig(bits=args.bits, group_size=args.group_size), progress=False)
    res["rtn"] = nlls(rtn_model)
    variants = [("gptq", True)] + ([] if args.act_order_only else [("gptq_noact", False)])
    for name, act_order in variants:
        m = copy.deepcopy(base)
        cfg = quantcore.GPTQConfig(bits=args.bits, group_size=args.group_size, act_order=act_order, n_samples=args.samples,
                                   seq_len=512, rtn_guard=not args.no_guard,
                                   skip_first_tokens=args.skip_first_tokens, percdamp=args.percdamp,
                                   gptaq_alpha=args.gptaq_alpha, loss_guard=_GUARD[args.loss_guard],
                                   loss_guard_windows=args.loss_guard_windows,
                                   **({} if args.sink_weight is None else {"sink_weight": args.sink_weight}))
        report = quantcore.quantize_(m, cfg, calib=calibration_text, tokenizer=tok, progress=False)
        kept = sum("kept RTN" in note for note in report.notes.values())
        print(f"{name}: {kept} of {len(report.layers)} layers kept RTN codes (held-out guard); "
              f"quantized in {report.seconds:.0f} s", flush=True)
        for label, (delta, se, chosen) in report.loss_guard.items():
            print(f"  loss guard {label:24s} {delta:+.5f} SE {se:.5f}{'  kept RTN' if chosen else ''}", flush=True)
        res[name] = nlls(m)
        if act_order:
            for spec, (kind, layers) in zip(args.rtn_for, specs):
                mixed, count = _with_rtn_codes(m, rtn_model, kind, layers)
                res[f"gptq, rtn for {spec}"] = nlls(mixed)
                print(f"gptq with RTN's codes for {spec}: {count} linears", flush=True)
                del mixed
    tokens = windows * 511
    print(f"W{args.bits} group {args.group_size}: {windows} windows of 511 scored tokens")
    for k, v in res.items():
        print(f"{k:11s} perplexity {math.exp(float(v.sum()) / tokens):.4f}")
    for a, b in [("gptq", "rtn"), ("gptq_noact", "rtn"), ("rtn", "float"), ("gptq", "float")] + \
            [(f"gptq, rtn for {spec}", "rtn") for spec in args.rtn_for]:
        if a not in res:
            continue
        diff = (res[a] - res[b]) / 511
        print(f"{a} - {b}: {float(diff.mean()):+.5f} nats/token, paired SE {float(diff.std() / math.sqrt(windows)):.5f}, "
              f"worse in {int((diff > 0).sum())}/{windows} windows")
    if args.json:
        args.json.write_text(json.dumps({k: v.tolist() for k, v in res.items()}) + "\n")


def _parse_spec(spec: str):
    """"down_proj" -> ("down_proj", None); "down_proj@12-18" -> ("down_proj", range(12, 18))."""
    kind, _, span = spec.partition("@")
    if not kind:
        raise SystemExit(f"--rtn-for {spec!r}: expected KIND or KIND@A-B")
    if not span:
        return kind, None
    try:
        a, b = (int(v) for v in span.split("-"))
    except ValueError:
        raise SystemExit(f"--rtn-for {spec!r}: expected KIND@A-B with integers A < B") from None
    if not 0 <= a < b:
        raise SystemExit(f"--rtn-for {spec!r}: expected 0 <= A < B")
    return kind, range(a, b)


def _with_rtn_codes(gptq_model, rtn_model, kind, layers):
    """A copy of ``gptq_model`` whose linears named ``kind`` (in decoder layers
    ``layers``, or all) are RTN's; and how many were swapped."""
    mixed = copy.deepcopy(gptq_model)
    _, mixed_layers = find_decoder_layers(mixed)
    _, rtn_layers = find_decoder_layers(rtn_model)
    count = 0
    for i, (block, rtn_block) in enumerate(zip(mixed_layers, rtn_layers)):
        if layers is not None and i not in layers:
            continue
        for name, _ in list(block.named_modules()):
            if name.split(".")[-1] == kind:
                replace_module(block, name, copy.deepcopy(rtn_block.get_submodule(name)))
                count += 1
    if count == 0:
        raise SystemExit(f"--rtn-for: no linear named {kind!r} in the chosen decoder layers")
    return mixed, count


if __name__ == "__main__":
    main()
