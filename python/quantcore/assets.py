"""Where the set-up put the small real model and text (scripts/prepare_assets.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

__all__ = ["assets_dir", "demo_model_dir", "demo_text_file", "gemma3_model_dir"]

_MODEL = Path("models") / "smollm2-135m-instruct"
_GEMMA3 = Path("models") / "gemma3-270m"
_TEXT = Path("data") / "lee_background.txt"


def _candidates() -> List[Path]:
    out = []
    env = os.environ.get("QUANTCORE_ASSETS")
    if env:
        out.append(Path(env))
    # The working directory and its parents: a notebook in notebooks/ finds the checkout's .cache.
    cwd = Path.cwd()
    out.extend(d / ".cache" for d in (cwd, *cwd.parents))
    out.append(Path(__file__).resolve().parents[2] / ".cache")  # source checkout
    return out


def assets_dir() -> Path:
    """The first assets directory holding the demo model (``$QUANTCORE_ASSETS`` first)."""
    for c in _candidates():
        if (c / _MODEL / "config.json").is_file():
            return c
    raise FileNotFoundError(
        "the demo model is not prepared; run `python scripts/prepare_assets.py` from the quantcore "
        "checkout (or `bash scripts/setup.sh`), or point QUANTCORE_ASSETS at its .cache directory. "
        f"Looked in: {', '.join(str(c) for c in _candidates())}")


def demo_model_dir() -> Path:
    """The prepared SmolLM2-135M-Instruct Hugging Face directory (model and tokenizer)."""
    return assets_dir() / _MODEL


def gemma3_model_dir() -> Path:
    """Gemma 3 270M, prepared only on request (``prepare_assets.py --gemma3``), so looked up on its own."""
    for c in _candidates():
        if (c / _GEMMA3 / "config.json").is_file():
            return c / _GEMMA3
    raise FileNotFoundError(
        "Gemma 3 270M is not prepared; run `python scripts/prepare_assets.py --gemma3` from the quantcore "
        "checkout, or point QUANTCORE_ASSETS at its .cache directory. "
        f"Looked in: {', '.join(str(c) for c in _candidates())}")


def demo_text_file() -> Path:
    """The prepared English text (the Lee news corpus, about 360 KB) used for calibration and perplexity."""
    path = assets_dir() / _TEXT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python scripts/prepare_assets.py`")
    return path
