"""Whole-model GPTQ / AWQ: wall time and peak memory of ``quantcore.quantize_``.

Models:
* ``smollm2`` / ``gemma3``: the real models scripts/prepare_assets.py prepares
  (``--gemma3`` for the latter), calibrated on the Lee corpus;
* ``llama-1b``: a randomly initialised Llama with TinyLlama-1.1B's shapes
  (2048 hidden, 5632 MLP, 22 layers), calibrated on random token ids: for
  timing and memory where no model files are at hand (the GPU machine).

Run: python benchmarks/bench_gptq_model.py --model smollm2 --samples 32 --seq-len 512
     python benchmarks/bench_gptq_model.py --model llama-1b --device cuda --samples 128 --seq-len 2048
     python benchmarks/bench_gptq_model.py --method awq ...   (or awq+gptq: AWQ scales, then GPTQ)
Peak memory: the process's peak resident set (CPU) and, with ``--device cuda``,
torch's peak GPU allocation during quantization.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import quantcore  # noqa: E402
from quantcore import eval as qe  # noqa: E402


def load(name: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if name == "llama-1b":
        cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                          num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096)
        torch.manual_seed(0)
        return LlamaForCausalLM._from_config(cfg, dtype=dtype).eval(), None
    path = quantcore.assets.demo_model_dir() if name == "smollm2" else quantcore.assets.gemma3_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["smollm2", "gemma3", "llama-1b"], default="smollm2")
    ap.add_argument("--device", default=None, help="calibration device (default: where the model is, the CPU)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--method", choices=["gptq", "awq", "awq+gptq"], default="gptq")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                    help="the model's dtype (calibration forward passes run in it; Hessians are fp32)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    model, tok = load(args.model, getattr(torch, args.dtype))
    if tok is None:
        calib = torch.randint(0, model.config.vocab_size, (args.samples, args.seq_len),
                              generator=torch.Generator().manual_seed(0))
    else:
        ids = qe.token_ids(tok, quantcore.assets.demo_text_file().read_text())
        calib = ids[ids.numel() // 2:]  # the half the quality benchmark does not evaluate on
    params = sum(p.numel() for p in model.parameters())
    model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20  # before quantization
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device and args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    common = dict(bits=args.bits, group_size=args.group_size, n_samples=args.samples, seq_len=args.seq_len)
    cfg = {"gptq": lambda: quantcore.GPTQConfig(**common, act_order=True),
           "awq": lambda: quantcore.AWQConfig(**common),
           "awq+gptq": lambda: quantcore.AWQConfig(**common, then_gptq=True, act_order=True)}[args.method]()
    t0 = time.perf_counter()
    report = quantcore.quantize_(model, cfg, calib=calib, tokenizer=tok, device=args.device, progress=True)
    secs = time.perf_counter() - t0
    out = {
        "model": args.model, "params_m": params / 1e6, "device": args.device or "cpu",
        "calibration": f"{args.samples}x{args.seq_len}", "method": args.method,
        "config": f"W{args.bits} g{args.group_size}" + (" act-order" if args.method != "awq" else ""),
        "seconds": secs, "solver_s": sum(layer.seconds for layer in report.layers), "layers": len(report.layers),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss_before, "dtype": args.dtype,
        "model_mib": model_mib,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    if args.device and args.device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    print(report)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
