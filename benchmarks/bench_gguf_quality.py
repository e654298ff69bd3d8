"""GGUF quality on the real model (issue 8): perplexity and size of quantcore's
GGUF exports for llama.cpp's mixtures, plain and with an importance matrix
collected on calibration text disjoint from the evaluation text, scored through
our own GGUF reader (load_gguf). quantcore's GPTQ W4/W3 results on the same
model and texts (benchmarks/data/awq_quality_gemma3.json) go on the same plot.

Run: python benchmarks/bench_gguf_quality.py [--model gemma3] [--types Q8_0 Q6_K ...]
     [--samples 64 --seq-len 512] [--json FILE] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import _real_model
import quantcore
from quantcore import eval as qe
from quantcore.gguf import GGUFReader, collect_imatrix, export_gguf, load_gguf

DATA = Path(__file__).resolve().parent / "data"


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
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=0, help="windows to score (0: the whole evaluation half)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()

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
    rows = []
    print("| type | imatrix | perplexity | file MiB | bits/weight (blocks) | export s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in args.types:
            for imx in (None, imatrix):
                path = Path(tmp) / f"{qtype}.gguf"
                t0 = time.perf_counter()
                rep = export_gguf(model_dir, path, qtype, imatrix=imx, overwrite=True, progress=False)
                seconds = time.perf_counter() - t0
                p = ppl(load_gguf(path, progress=False))
                row = dict(type=qtype, imatrix=imx is not None, ppl=p, file_mib=rep.file_bytes / 2**20,
                           bpw_blocks=linear_bits(path), bpw_file=rep.bits_per_weight, seconds=seconds,
                           fallbacks=rep.fallbacks)
                rows.append(row)
                print(f"| {qtype} | {'yes' if imx is not None else 'no'} | {p:.3f} | {row['file_mib']:.1f} | "
                      f"{row['bpw_blocks']:.2f} | {seconds:.1f} |", flush=True)
    ours = []
    ref = DATA / f"awq_quality_{args.model}.json"
    if ref.is_file():
        for r in json.loads(ref.read_text())["rows"]:
            if r["method"] == "gptq":
                bits = int(r["config"][1])
                ours.append(dict(config=r["config"], ppl=r["ppl"], bpw_blocks=bits + 16 / 128))
    out = dict(model=args.model, float=base, samples=args.samples, seq_len=args.seq_len, windows=windows,
               imatrix_seconds=imatrix_s, rows=rows, quantcore_gptq=ours)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for imx, style, label in ((False, "o--", "GGUF (quantcore export), plain"),
                                  (True, "s-", "GGUF (quantcore export), imatrix")):
            pts = sorted((r["bpw_blocks"], r["ppl"], r["type"]) for r in rows if r["imatrix"] == imx)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            if imx:
                for x, y, name in pts:
                    ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if ours:
            ax.plot([o["bpw_blocks"] for o in ours], [o["ppl"] for o in ours], "D", color="C3", ms=8,
                    label="quantcore GPTQ g128 (blocks only; embeddings float)")
        ax.axhline(base, color="gray", lw=1, ls=":", label=f"float32 {base:.2f}")
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight of the decoder blocks' matrices")
        ax.set_ylabel("perplexity (Lee corpus, evaluation half)")
        ax.set_title(f"{args.model}: perplexity against bits per weight")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
