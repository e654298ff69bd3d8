"""The real model and texts the quality benchmarks share (GPTQ, AWQ, paired test).

Evaluation is the first half of the Lee corpus, calibration text the disjoint
second half (decoded back to text, so calibration windows start with BOS like
real inputs when the tokenizer adds one)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import quantcore  # noqa: E402
from quantcore import eval as qe  # noqa: E402


@dataclass
class RealModel:
    model: Any
    tokenizer: Any
    evaluation: torch.Tensor  # token ids
    calibration_text: str
    bos: Optional[int]        # Gemma expects its BOS first; SmolLM2's tokenizer adds none
    group_size: int           # 128, or 64 for SmolLM2's 576-wide layers


def load(name: str = "gemma3") -> RealModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = quantcore.assets.gemma3_model_dir() if name == "gemma3" else quantcore.assets.demo_model_dir()
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    ids = qe.token_ids(tok, quantcore.assets.demo_text_file().read_text())
    half = ids.numel() // 2
    return RealModel(model, tok, ids[:half], tok.decode(ids[half:]), qe.bos_token_id(tok),
                     128 if name == "gemma3" else 64)
