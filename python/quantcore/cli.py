"""Command line (``quantcore ...`` or ``python -m quantcore ...``):

* ``demo``: quantize the bundled small model and compare with float;
* ``quantize MODEL_DIR -o OUT_DIR``: quantize a Hugging Face checkpoint directory,
  one decoder layer in memory at a time, into any supported format;
* ``export-gguf MODEL_DIR -o FILE --type Q4_K_M``: a GGUF file for llama.cpp, streamed,
  with llama.cpp's mixtures and (``--calib``) an importance matrix;
* ``eval DIR|FILE.gguf``: perplexity of a float or quantized model (directory or GGUF file);
* ``info [DIR|FILE.gguf]``: versions and CPU kernels, or a quantized checkpoint's summary.

User errors (missing files, bad configs, a non-empty output directory) print
one ``error:`` line and exit with status 2.
"""

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
    ev.add_argument("model", type=Path, help="model directory (a quantcore save is detected from config.json) "
                    "or a .gguf file")
    ev.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizer directory (needed for a .gguf file)")
    ev.add_argument("--text", type=Path, help="UTF-8 text file (default: the prepared Lee corpus)")
    ev.add_argument("--seq-len", type=int, default=2048)
    ev.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: seq-len)")
    ev.add_argument("--max-windows", type=int, default=None)
    ev.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ev.add_argument("--gguf-quantized", action="store_true",
                    help="keep a .gguf file's Q8_0/Q4_0/Q5_0/Q3_K/Q6_K layers as QuantLinear (default: dequantize)")
    info = sub.add_parser("info", help="versions and CPU kernels; with DIR, a quantized checkpoint's summary")
    info.add_argument("dir", type=Path, nargs="?", help="quantized checkpoint directory or .gguf file")
    gg = sub.add_parser("export-gguf", help="write a GGUF file for llama.cpp from a Hugging Face checkpoint")
    gg.add_argument("model", type=Path, help="Hugging Face checkpoint directory (safetensors + config + tokenizer)")
    gg.add_argument("-o", "--output", type=Path, required=True, help="output .gguf file")
    gg.add_argument("--type", default="Q4_K_M", help="llama.cpp mixture: Q2_K, Q3_K_S/M/L, Q4_0, Q4_1, "
                    "Q4_K_S/M, Q5_0, Q5_1, Q5_K_S/M, Q6_K, Q8_0, F16, BF16, F32 (default Q4_K_M)")
    gg.add_argument("--calib", type=Path, help="calibration text: collect an importance matrix and weight the "
                    "quantizers by it (llama.cpp's --imatrix)")
    gg.add_argument("--gptq", action="store_true", help="with --calib: GPTQ error compensation across columns "
                    "while producing the blocks (the decoder layers' matrices)")
    gg.add_argument("--n-samples", type=int, default=64, help="calibration windows")
    gg.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window")
    gg.add_argument("--device", default=None, help="where the imatrix walk runs, e.g. cuda (default cpu)")
    gg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    gg.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("quantize", help="quantize a Hugging Face checkpoint directory (streamed layer by layer)")
    q.add_argument("model", type=Path, help="Hugging Face checkpoint directory (safetensors + config + tokenizer)")
    q.add_argument("-o", "--output", type=Path, required=True, help="output directory (must not exist or be empty)")
    q.add_argument("--method", default="rtn", choices=["rtn", "gptq", "awq", "awq+gptq"])
    q.add_argument("--bits", type=int, default=4)
    q.add_argument("--group-size", type=int, default=128, help="columns per group; -1 per channel")
    q.add_argument("--asym", action="store_true", help="asymmetric grids (zero points); default symmetric")
    q.add_argument("--act-order", action="store_true", help="GPTQ: columns by descending Hessian diagonal")
    q.add_argument("--calib", type=Path, help="calibration text file (GPTQ, AWQ)")
    q.add_argument("--n-samples", type=int, default=128, help="calibration windows")
    q.add_argument("--seq-len", type=int, default=2048, help="tokens per calibration window")
    q.add_argument("--format", default="quantcore", choices=["quantcore", "gptq", "gptq_v2", "awq",
                                                             "compressed-tensors"])
    q.add_argument("--device", default=None, help="where each layer is calibrated, e.g. cuda (default cpu)")
    q.add_argument("--include", action="append", help="quantize only linears matching this pattern (repeatable)")
    q.add_argument("--exclude", action="append", help="keep linears matching this pattern in float (repeatable)")
    q.add_argument("--max-shard-size", type=int, default=1024, help="output shard size in MiB")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    q.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        return 0
    except (OSError, ValueError, TypeError) as e:  # user errors: one line, no traceback
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        print(f"error: {msg}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.model, args.text, seq_len=args.seq_len, windows=args.windows,
                 gen_tokens=args.gen_tokens, progress=not args.no_progress)
        return 0
    if args.command == "eval":
        return _eval(args)
    if args.command == "quantize":
        return _quantize(args)
    if args.command == "export-gguf":
        return _export_gguf(args)
    if args.command == "info" and args.dir is not None and args.dir.suffix == ".gguf":
        return _info_gguf(args.dir)
    if args.command == "info" and args.dir is not None:
        return _info_dir(args.dir)
    if args.command == "info":
        import torch

        import quantcore

        print(f"quantcore {quantcore.__version__}, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}")
        print(f"CPU kernels: {quantcore.cpu_isa()} (supported: {', '.join(quantcore._C.supported_cpu_isas())})")
        return 0
    return 1  # pragma: no cover


def _eval(args) -> int:
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import eval as qc_eval
    from .assets import demo_text_file
    from .checkpoint_io import read_config
    from .serialization import load_quantized

    dtype = getattr(torch, args.dtype)
    if args.model.suffix == ".gguf":
        from .gguf import load_gguf

        if args.tokenizer is None:
            raise ValueError("a .gguf model needs --tokenizer DIR (the Hugging Face tokenizer it was made with)")
        model = load_gguf(args.model, dtype=dtype, quantized=args.gguf_quantized, progress=False)
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    elif read_config(args.model).get("quantization_config"):  # any format quantcore reads (quantcore, gptq, awq, compressed-tensors)
        model = load_quantized(args.model, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.eval()
    if args.model.suffix != ".gguf":
        tok = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    text_file = args.text or demo_text_file()
    ppl = qc_eval.perplexity(model, tok, text_file.read_text(encoding="utf-8"), seq_len=args.seq_len,
                             stride=args.stride, max_windows=args.max_windows)
    print(f"perplexity {ppl:.4f}  ({args.model}, {text_file.name}, seq_len {args.seq_len}, "
          f"stride {args.stride or args.seq_len})")
    return 0


def _quantize(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import quantcore
    from .streaming import quantize_checkpoint

    common = dict(bits=args.bits, group_size=args.group_size, sym=not args.asym)
    calibrated = args.method != "rtn"
    if args.method == "rtn":
        if args.act_order or args.calib:
            raise ValueError("--act-order and --calib are for --method gptq / awq / awq+gptq")
        config = quantcore.RTNConfig(**common)
    elif args.method == "gptq":
        config = quantcore.GPTQConfig(**common, act_order=args.act_order, n_samples=args.n_samples,
                                      seq_len=args.seq_len)
    else:
        # Other formats cannot store a scale no earlier op absorbs: leave those linears unscaled.
        config = quantcore.AWQConfig(**common, then_gptq=args.method == "awq+gptq", act_order=args.act_order,
                                     n_samples=args.n_samples, seq_len=args.seq_len,
                                     unfolded="input_scale" if args.format == "quantcore" else "skip")
    tokenizer = None
    if calibrated:
        if args.calib is None:
            raise ValueError(f"--method {args.method} needs calibration text: --calib FILE")
        if not args.calib.is_file():
            raise FileNotFoundError(f"calibration file {args.calib} not found")
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(args.model))
        except Exception as e:  # transformers raises many types for a missing/corrupt tokenizer
            raise ValueError(f"cannot load the tokenizer of {args.model}: {e}") from None
    out, report = quantize_checkpoint(
        args.model, args.output, config, format=args.format, calib=args.calib if calibrated else None,
        tokenizer=tokenizer, device=args.device, include=args.include, exclude=args.exclude,
        max_shard_bytes=args.max_shard_size << 20, overwrite=args.overwrite, progress=not args.no_progress)
    print(report)
    print(f"wrote {out} ({args.format}, {_dir_bytes(out) / 2**20:.1f} MiB)")
    return 0


def _export_gguf(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .gguf import export_gguf

    calib = None
    if args.calib is not None:
        if not args.calib.is_file():
            raise FileNotFoundError(f"calibration file {args.calib} not found")
        calib = args.calib
    if args.gptq and calib is None:
        raise ValueError("--gptq needs calibration text: --calib FILE")
    report = export_gguf(args.model, args.output, args.type, calib=calib, gptq=args.gptq, n_samples=args.n_samples,
                         seq_len=args.seq_len, device=args.device, overwrite=args.overwrite,
                         progress=not args.no_progress)
    print(report.summary())
    return 0


def _info_gguf(path: Path) -> int:
    from .gguf import GGUFReader, LlamaFileType

    r = GGUFReader(path)
    md = r.metadata
    arch = md.get("general.architecture", "?")
    ft = md.get("general.file_type")
    try:
        ft_name = LlamaFileType(ft).name.replace("MOSTLY_", "") if ft is not None else "?"
    except ValueError:
        ft_name = str(ft)
    counts = {}
    elements = 0
    for t in r.tensors:
        counts[t.ggml_type.name] = counts.get(t.ggml_type.name, 0) + 1
        elements += t.n_elements
    size = path.stat().st_size
    print(f"{path}: GGUF v{r.version}, {arch}, file type {ft_name}, {size / 2**20:.1f} MiB, "
          f"{8 * size / max(elements, 1):.2f} bits per weight")
    print(f"{len(r.tensors)} tensors: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    keys = [k for k in md if k.startswith(f"{arch}.")]
    print("  " + ", ".join(f"{k[len(arch) + 1:]}={md[k]}" for k in keys))
    if "tokenizer.ggml.tokens" in md:
        print(f"  tokenizer {md.get('tokenizer.ggml.model')} ({md.get('tokenizer.ggml.pre')}), "
              f"{len(md['tokenizer.ggml.tokens'])} tokens")
    return 0


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _info_dir(path: Path) -> int:
    from . import formats
    from .checkpoint_io import TensorSource, read_config

    cfg = read_config(path)
    qcfg = cfg.get("quantization_config")
    if not isinstance(qcfg, dict):
        print(f"{path}: float checkpoint ({(cfg.get('architectures') or ['?'])[0]}), "
              f"{_dir_bytes(path) / 2**20:.1f} MiB on disk")
        return 0
    fmt = formats.detect_format(qcfg)
    source = TensorSource(path)
    print(f"{path}: {fmt} checkpoint of {(cfg.get('architectures') or ['?'])[0]}, "
          f"{_dir_bytes(path) / 2**20:.1f} MiB on disk")
    if fmt == "quantcore":
        rows = [(n, s["out_features"], s["in_features"], s["bits"], s["group_size"], s["sym"])
                for n, s in qcfg["modules"].items()]
    else:
        module = formats.FORMATS[fmt]
        names = module.quantized_names(source.keys())
        bits = qcfg.get("bits") or next(iter((qcfg.get("config_groups") or {}).values()), {}).get(
            "weights", {}).get("num_bits")
        rows = [(n, *module.layer_shape(n, source, qcfg), bits, None, None) for n in names]
    print(f"{len(rows)} quantized layers")
    for name, out_f, in_f, b, g, sym in rows:
        extra = "" if g is None else f", group {g}, {'sym' if sym else 'asym'}"
        print(f"  {name}: [{out_f}, {in_f}] {b}-bit{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
