"""Memory bar of the conversion CLI (issue 7): a Llama-shaped checkpoint of
>= 2B parameters (random bf16 weights, several shards) is written, then
quantized through `quantcore quantize` in a child process; the child's peak
RSS must stay <= 25% of the bf16 checkpoint's size.

Run: python benchmarks/bench_streaming_memory.py [--layers 28 --hidden 2560 --mlp 6912 --vocab 32000]
     [--methods rtn gptq] [--calib-samples 16 --seq-len 512] [--device cpu|cuda] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def write_checkpoint(path: Path, args) -> int:
    """A random-weight Llama checkpoint (bf16 shards of <= 1 GiB, config, a char-level
    tokenizer), written tensor by tensor. Returns its bytes of weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from quantcore.checkpoint_io import ShardWriter

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128,
                      num_key_value_heads=max(1, args.hidden // 512), max_position_embeddings=4096,
                      tie_word_embeddings=False, dtype="bfloat16")
    cfg.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(cfg).state_dict().items()}
    path.mkdir(parents=True)
    writer = ShardWriter(path, 1 << 30)
    g = torch.Generator().manual_seed(0)
    for key, shape in shapes.items():
        t = torch.ones(shape) if key.endswith("norm.weight") else torch.randn(shape, generator=g) * 0.02
        writer.add({key: t.to(torch.bfloat16)})
    writer.close()
    cfg.save_pretrained(path)
    vocab = {chr(32 + i): i for i in range(95)}
    vocab["[UNK]"] = 95
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]").save_pretrained(path)
    return writer.total_bytes


def measured(cmd) -> dict:
    wrapper = ("import resource, subprocess, sys, json, time; t=time.perf_counter(); "
               "p=subprocess.run(sys.argv[1:]); r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
               "print(json.dumps({'rc': p.returncode, 'peak_rss_kib': r, 'seconds': time.perf_counter()-t}))")
    out = subprocess.run([sys.executable, "-c", wrapper] + cmd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines or json.loads(lines[-1])["rc"]:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit("quantcore quantize failed")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--hidden", type=int, default=2560)
    ap.add_argument("--mlp", type=int, default=6912)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--methods", nargs="+", default=["rtn", "gptq"])
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--format", default="gptq")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        src = work / "src"
        t0 = time.perf_counter()
        weight_bytes = write_checkpoint(src, args)
        params = weight_bytes // 2
        out = {"params": params, "checkpoint_bytes": weight_bytes, "write_seconds": time.perf_counter() - t0,
               "shape": {k: getattr(args, k) for k in ("layers", "hidden", "mlp", "vocab")},
               "format": args.format, "device": args.device, "runs": {}}
        print(f"checkpoint: {params / 1e9:.2f}B parameters, {weight_bytes / 2**30:.2f} GiB bf16", flush=True)
        calib = work / "calib.txt"
        calib.write_text("The quick brown fox jumps over the lazy dog.\n" * 4000)
        for method in args.methods:
            cmd = [sys.executable, "-m", "quantcore", "quantize", str(src), "-o", str(work / f"out-{method}"),
                   "--method", method, "--bits", "4", "--group-size", "128", "--format", args.format,
                   "--no-progress", "--device", args.device]
            if method != "rtn":
                cmd += ["--calib", str(calib), "--n-samples", str(args.calib_samples), "--seq-len", str(args.seq_len)]
            r = measured(cmd)
            peak = r["peak_rss_kib"] * 1024
            r.update(peak_rss_bytes=peak, peak_over_checkpoint=peak / weight_bytes)
            out["runs"][method] = r
            print(f"{method}: {r['seconds']:.1f} s, peak RSS {peak / 2**30:.2f} GiB = "
                  f"{peak / weight_bytes:.1%} of the bf16 checkpoint (bar <= 25%)", flush=True)
            shutil.rmtree(work / f"out-{method}", ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
