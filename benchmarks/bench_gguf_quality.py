"""GGUF quality on the real model (issue 8): perplexity and size of quantcore's
GGUF exports for llama.cpp's mixtures, plain and with an importance matrix
collected on calibration text disjoint from the evaluation text, scored through
our own GGUF reader (load_gguf); optionally with GPTQ compensation across the
blocks. quantcore's own GPTQ W4/W3 (g128, act-order) on the same texts goes on the
same plot.

Run: python benchmarks/bench_gguf_quality.py [--model gemma3] [--types Q8_0 Q6_K ...]
     [--gptq-types Q4_K_M Q3_K_M] [--ours 4 3] [--samples 32 --seq-len 512] [--eval-windows 24]
     [--json FILE] [--plot FILE.png]
     python benchmarks/bench_gguf_quality.py --replot data/FILE.json --plot FILE.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _real_model
import quantcore
from quantcore import eval as qe
from quantcore.gguf import GGUFReader, collect_imatrix, export_gguf, load_gguf

def linear_bits(path: Path) -> float:
    """Bits per weight of the decoder blocks' 2-D weights (embeddings excluded)."""
    r = GGUFReader(path)
    bits = elements = 0
    for t in r.tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            bits += 8 * t.n_bytes
            elements += t.n_elements
    return bits / elements


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["gemma3", "smollm2"], default="gemma3")
    ap.add_argument("--types", nargs="+", default=["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"])
    ap.add_argument("--gptq-types", nargs="*", default=["Q4_K_M", "Q3_K_M"],
                    help="mixtures also exported with GPTQ compensation (--gptq)")
    ap.add_argument("--ours", type=int, nargs="*", default=[4, 3],
                    help="bits of quantcore's own GPTQ g128 (act-order) on the same texts, for the plot")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=0, help="windows to score (0: the whole evaluation half)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--replot", type=Path, help="only draw --plot from this JSON file of an earlier run")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.plot or args.replot.with_suffix(".png"))
        return

    rm = _real_model.load(args.model)
    model_dir = quantcore.assets.gemma3_model_dir() if args.model == "gemma3" else quantcore.assets.demo_model_dir()
    windows = args.eval_windows or rm.evaluation.numel() // args.seq_len

    def ppl(m):
        return qe.perplexity(m, rm.evaluation, seq_len=args.seq_len, max_windows=windows, bos_token_id=rm.bos,
                             progress=False)

    base = ppl(rm.model)
    print(f"{args.model}: float32 perplexity {base:.3f} ({windows} x {args.seq_len} tokens)", flush=True)
    t0 = time.perf_counter()
    imatrix = collect_imatrix(model_dir, [rm.calibration_text], rm.tokenizer, n_samples=args.samples,
                              seq_len=args.seq_len, progress=False)
    imatrix_s = time.perf_counter() - t0
    print(f"imatrix: {args.samples} x {args.seq_len} calibration tokens, {imatrix_s:.1f} s", flush=True)
    rows, ours = [], []

    def results() -> dict:
        return dict(model=args.model, float=base, samples=args.samples, seq_len=args.seq_len, windows=windows,
                    imatrix_seconds=imatrix_s, rows=rows, quantcore_gptq=ours)

    def save():  # after every row, so an interrupted run keeps what it measured
        if args.json:
            args.json.write_text(json.dumps(results(), indent=1) + "\n")

    print("| type | calibration | perplexity | file MiB | bits/weight (blocks) | export s |\n|---|---|---|---|---|---|")
    calib = dict(calib=[rm.calibration_text], tokenizer=rm.tokenizer, n_samples=args.samples, seq_len=args.seq_len)
    variants = [(t, "plain") for t in args.types] + [(t, "imatrix") for t in args.types] + \
               [(t, "gptq") for t in args.gptq_types]
    with tempfile.TemporaryDirectory() as tmp:
        for qtype, how in variants:
            path = Path(tmp) / f"{qtype}.gguf"
            t0 = time.perf_counter()
            extra = {"plain": {}, "imatrix": dict(imatrix=imatrix), "gptq": dict(gptq=True, **calib)}[how]
            rep = export_gguf(model_dir, path, qtype, overwrite=True, progress=False, **extra)
            seconds = time.perf_counter() - t0
            p = ppl(load_gguf(path, progress=False))
            row = dict(type=qtype, calibration=how, imatrix=how != "plain", ppl=p, file_mib=rep.file_bytes / 2**20,
                       bpw_blocks=linear_bits(path), bpw_file=rep.bits_per_weight, seconds=seconds,
                       fallbacks=rep.fallbacks)
            rows.append(row)
            print(f"| {qtype} | {how} | {p:.3f} | {row['file_mib']:.1f} | {row['bpw_blocks']:.2f} | {seconds:.1f} |",
                  flush=True)
            save()
    for bits in args.ours:
        import copy

        m = copy.deepcopy(rm.model)
        t0 = time.perf_counter()
        quantcore.quantize_(m, quantcore.GPTQConfig(bits=bits, group_size=rm.group_size, act_order=True,
                                                    n_samples=args.samples, seq_len=args.seq_len),
                            calib=[rm.calibration_text], tokenizer=rm.tokenizer, progress=False)
        ours.append(dict(config=f"W{bits} g{rm.group_size}", ppl=ppl(m), bpw_blocks=bits + 16 / rm.group_size,
                         seconds=time.perf_counter() - t0))
        print(f"quantcore GPTQ W{bits} g{rm.group_size}: perplexity {ours[-1]['ppl']:.3f}", flush=True)
        del m
        save()
    if args.plot:
        plot(results(), args.plot)


def plot(data: dict, path: Path) -> None:
    """Perplexity against bits per weight, from the benchmark's JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, ours, base = data["rows"], data["quantcore_gptq"], data["float"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for how, style, label in (("plain", "o--", "GGUF export, plain"), ("imatrix", "s-", "GGUF export, imatrix"),
                              ("gptq", "^", "GGUF export, GPTQ compensation")):
        pts = sorted((r["bpw_blocks"], r["ppl"], r["type"]) for r in rows if r["calibration"] == how)
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=7)
        if how == "plain":
            for k, (x, y, name) in enumerate(pts):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 6 if k % 2 else -12), fontsize=8)
    for o in ours:
        ax.plot([o["bpw_blocks"]], [o["ppl"]], "D", color="C3", ms=8)
        ax.annotate(f"quantcore GPTQ {o['config']}", (o["bpw_blocks"], o["ppl"]), textcoords="offset points",
                    xytext=(6, -3), fontsize=8, color="C3")
    if ours:
        ax.plot([], [], "D", color="C3", label="quantcore GPTQ (lm_head and embeddings float)")
    ax.axhline(base, color="gray", lw=1, ls=":", label=f"float32 {base:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight of the decoder blocks' matrices")
    ax.set_ylabel("perplexity (Lee corpus, evaluation half)")
    ax.set_title(f"{data['model']}: perplexity against bits per weight")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
