"""Command line: ``quantcore demo`` / ``python -m quantcore demo``, ``quantcore info``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="quantcore", description="quantcore: quantize LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="quantize the bundled small model and compare with float")
    demo.add_argument("--model", type=Path, help="Hugging Face model directory (default: prepared SmolLM2)")
    demo.add_argument("--text", type=Path, help="text file for perplexity (default: prepared Lee corpus)")
    demo.add_argument("--seq-len", type=int, default=256)
    demo.add_argument("--windows", type=int, default=8)
    demo.add_argument("--gen-tokens", type=int, default=32)
    demo.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("eval", help="perplexity of a Hugging Face or quantcore model directory on a text file")
    ev.add_argument("model", type=Path, help="model directory (a quantcore save is detected from config.json)")
    ev.add_argument("--text", type=Path, help="UTF-8 text file (default: the prepared Lee corpus)")
    ev.add_argument("--seq-len", type=int, default=2048)
    ev.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: seq-len)")
    ev.add_argument("--max-windows", type=int, default=None)
    ev.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    sub.add_parser("info", help="print versions and the CPU kernel instruction set")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(args.model, args.text, seq_len=args.seq_len, windows=args.windows,
                     gen_tokens=args.gen_tokens, progress=not args.no_progress)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "eval":
        return _eval(args)
    if args.command == "info":
        import torch

        import quantcore

        print(f"quantcore {quantcore.__version__}, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}")
        print(f"CPU kernels: {quantcore.cpu_isa()} (supported: {', '.join(quantcore._C.supported_cpu_isas())})")
        return 0
    return 1  # pragma: no cover


def _eval(args) -> int:
    import json
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import eval as qc_eval
    from .assets import demo_text_file
    from .serialization import load_quantized

    cfg_file = args.model / "config.json"
    if not cfg_file.is_file():
        print(f"error: {cfg_file} not found", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    qcfg = json.loads(cfg_file.read_text()).get("quantization_config") or {}
    if qcfg.get("quant_method") == "quantcore":
        model = load_quantized(args.model, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    text_file = args.text or demo_text_file()
    ppl = qc_eval.perplexity(model, tok, text_file.read_text(encoding="utf-8"), seq_len=args.seq_len,
                             stride=args.stride, max_windows=args.max_windows)
    print(f"perplexity {ppl:.4f}  ({args.model}, {text_file.name}, seq_len {args.seq_len}, "
          f"stride {args.stride or args.seq_len})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
