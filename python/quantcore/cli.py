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
    if args.command == "info":
        import torch

        import quantcore

        print(f"quantcore {quantcore.__version__}, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}")
        print(f"CPU kernels: {quantcore.cpu_isa()} (supported: {', '.join(quantcore._C.supported_cpu_isas())})")
        return 0
    return 1  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
