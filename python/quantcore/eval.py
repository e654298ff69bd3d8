"""Model-quality measurements: perplexity on a text, agreement with a reference model."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["perplexity", "token_ids"]


def token_ids(tokenizer: Any, text: str) -> torch.Tensor:
    """The whole text as one row of token ids (no special tokens added)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return ids[0]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    *,
    seq_len: int = 512,
    max_windows: Optional[int] = None,
    batch_size: int = 1,
    progress: bool = True,
) -> float:
    """Perplexity of ``model`` on ``ids`` (1-D token ids) in non-overlapping windows.

    Every token after the first of each window is scored, as in the GPTQ and
    AWQ papers' WikiText-2 protocol (there with ``seq_len=2048``).
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if seq_len < 2:
        raise ValueError("seq_len must be >= 2")
    n_windows = ids.numel() // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise ValueError(f"the text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    windows = ids[: n_windows * seq_len].view(n_windows, seq_len)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress, unit="batch"):
        batch = windows[start:start + batch_size].to(device)
        logits = model(batch).logits.float()
        nll = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total_nll += float(nll)
        total_tokens += batch[:, 1:].numel()
    return math.exp(total_nll / total_tokens)
