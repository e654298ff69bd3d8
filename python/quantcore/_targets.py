"""Finding the layers ``quantize_`` should replace, and replacing them."""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, List, Optional, Sequence, Tuple

from torch import nn

from .nn.quant_linear import QuantLinear, is_conv1d

__all__ = ["find_targets", "name_matches", "replace_module", "output_embedding_names"]


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Glob match on the qualified module name; ``re:`` prefix for a regular expression."""
    for pat in patterns:
        if pat.startswith("re:"):
            if re.search(pat[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, pat):
            return True
    return False


def output_embedding_names(model: nn.Module) -> List[str]:
    """Names of the modules that produce the logits (skipped by default, like peers do)."""
    names = []
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    for name, module in model.named_modules():
        if (head is not None and module is head) or name == "lm_head" or name.endswith(".lm_head"):
            names.append(name)
    return names


def find_targets(
    model: nn.Module,
    include: Optional[Sequence[str]] = None,
    exclude: Optional[Sequence[str]] = None,
    skip_output_embeddings: bool = True,
) -> Tuple[List[Tuple[str, nn.Module]], List[str]]:
    """``(targets, skipped)``: linear layers to quantize and names left in float."""
    for arg, val in (("include", include), ("exclude", exclude)):
        if val is not None and (isinstance(val, str) or not all(isinstance(p, str) for p in val)):
            raise TypeError(f"{arg} must be a list of name patterns, got {val!r}")
    heads = set(output_embedding_names(model)) if skip_output_embeddings else set()
    targets, skipped = [], []
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear) or not (isinstance(module, nn.Linear) or is_conv1d(module)):
            continue
        if name in heads and not (include and name_matches(name, include)):
            skipped.append(name)
        elif include is not None and not name_matches(name, include):
            skipped.append(name)
        elif exclude is not None and name_matches(name, exclude):
            skipped.append(name)
        else:
            targets.append((name, module))
    return targets, skipped


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
