"""Model-quality measurements: perplexity on a text."""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["perplexity", "token_ids", "bos_token_id"]


def bos_token_id(tokenizer: Any) -> Optional[int]:
    """The BOS id when ``tokenizer`` puts one before every text (Gemma, Llama 2),
    else None. Such models expect it: Gemma-3's perplexity is ~3x worse without."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return int(bos) if ids and ids[0] == bos else None


def token_ids(tokenizer: Any, text: str) -> torch.Tensor:
    """The whole text as one row of token ids (no special tokens added)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return ids[0]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokens: Union[torch.Tensor, Any],
    text: Optional[str] = None,
    *,
    seq_len: int = 2048,
    stride: Optional[int] = None,
    max_windows: Optional[int] = None,
    bos_token_id: Optional[int] = None,
    progress: bool = True,
) -> float:
    """Perplexity of ``model`` on a text, in windows of ``seq_len`` tokens.

    ``tokens`` is either a 1-D tensor of token ids or a tokenizer, with ``text``
    the string to score. With ``stride=None`` (= ``seq_len``) the windows do not
    overlap and each window's first token is not scored, as in the GPTQ and AWQ
    papers' WikiText-2 protocol. A smaller ``stride`` slides the window and scores
    only the tokens not scored before, each with up to ``seq_len`` tokens of context.
    ``bos_token_id`` is put before every window (as context only: the same tokens
    are scored); given a tokenizer that adds a BOS, it is used unless passed.
    """
    if isinstance(tokens, torch.Tensor):
        ids = tokens
    else:
        if text is None:
            raise ValueError("pass the text to score along with the tokenizer")
        ids = token_ids(tokens, text)
        if bos_token_id is None:
            bos_token_id = globals()["bos_token_id"](tokens)
    if ids.dim() != 1:
        raise ValueError(f"token ids must be 1-D, got shape {tuple(ids.shape)}")
    if seq_len < 2:
        raise ValueError("seq_len must be >= 2")
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len], got {stride}")
    n = ids.numel()
    if n < seq_len:
        raise ValueError(f"the text has {n} tokens, fewer than one window of {seq_len}")
    # Non-overlapping windows use whole windows only (the papers' protocol);
    # sliding windows also take a last window ending at the text's end.
    starts = list(range(0, n - seq_len + 1, stride))
    if stride < seq_len and starts[-1] + seq_len < n:
        starts.append(n - seq_len)
    if max_windows is not None:
        starts = starts[:max_windows]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total_nll, total_tokens, scored_until = 0.0, 0, 0
    for begin in tqdm(starts, desc="perplexity", disable=not progress, unit="window"):
        end = begin + seq_len
        window = ids[begin:end].to(device).unsqueeze(0)
        if bos_token_id is None:
            logits = model(window).logits[0, :-1].float()
        else:
            bos = torch.full((1, 1), bos_token_id, dtype=window.dtype, device=device)
            logits = model(torch.cat([bos, window], dim=1)).logits[0, 1:-1].float()
        targets = window[0, 1:]
        # Score only positions not scored by an earlier window (all but the first token at start).
        first = 0 if stride == seq_len else max(scored_until - begin - 1, 0)
        nll = nn.functional.cross_entropy(logits[first:], targets[first:], reduction="sum")
        total_nll += float(nll)
        total_tokens += targets.numel() - first
        scored_until = end
    return math.exp(total_nll / total_tokens)
