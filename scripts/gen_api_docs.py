"""Writes docs/api.md from the public API's signatures and docstrings.

    python scripts/gen_api_docs.py           # rewrite docs/api.md
    python scripts/gen_api_docs.py --check   # exit 1 if docs/api.md is stale

The public API is each listed module's ``__all__``. tests/python/test_docs.py runs
the check and also requires a docstring and full type hints on every item.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import re
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

MODULES = [
    ("quantcore", "Quantize, save and load models (the top-level API)."),
    ("quantcore.ops", "The kernels as functions (each wraps a `torch.ops.quantcore.*` op)."),
    ("quantcore.qat", "Quantization-aware training."),
    ("quantcore.eval", "Perplexity."),
    ("quantcore.streaming", "Checkpoint-to-checkpoint conversion, one decoder layer at a time."),
    ("quantcore.gguf", "GGUF export, reading and loading."),
    ("quantcore.assets", "Where the set-up put the demo model and text."),
]
OUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def public_items(module) -> Iterator[Tuple[str, object]]:
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue  # documented under its own heading
        if module.__name__ != "quantcore" and getattr(obj, "__module__", "").startswith("quantcore") and \
                _documented_at_top(obj):
            continue  # re-exported from the top level: documented there
        yield name, obj


def _documented_at_top(obj) -> bool:
    import quantcore

    return any(getattr(quantcore, n, None) is obj for n in quantcore.__all__)


def _signature(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r"<([\w.]+): ([^>]+)>", r"\2", sig.replace("'", ""))


def public_methods(cls) -> Iterator[Tuple[str, object]]:
    for name, member in cls.__dict__.items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (classmethod,
                                                                                          staticmethod, property))):
            continue
        yield name, member


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__) if getattr(obj, "__doc__", None) else ""


def render() -> str:
    import importlib

    lines: List[str] = ["# quantcore API reference", "",
                        "Generated from the code by `scripts/gen_api_docs.py`; do not edit by hand. "
                        "Every item below is in its module's `__all__`.", ""]
    for modname, blurb in MODULES:
        module = importlib.import_module(modname)
        lines += [f"## `{modname}`", "", blurb, ""]
        for name, obj in public_items(module):
            qual = f"{modname}.{name}"
            if inspect.isclass(obj):
                kind = "enum" if issubclass(obj, enum.Enum) else "dataclass" if dataclasses.is_dataclass(obj) \
                    else "class"
                lines += [f"### `{qual}` ({kind})", ""]
                if not issubclass(obj, enum.Enum):
                    lines += ["```python", f"{name}{_signature(obj)}", "```", ""]
                lines += [_doc(obj), ""]
                if issubclass(obj, enum.Enum):
                    lines += [", ".join(f"`{m.name}` = {m.value}" for m in obj), ""]
                    continue
                for mname, member in public_methods(obj):
                    fn = member.fget if isinstance(member, property) else getattr(obj, mname)
                    head = f"`{name}.{mname}`" + " (property)" if isinstance(member, property) else \
                        f"`{name}.{mname}{_signature(fn)}`"
                    doc = _doc(fn)
                    lines += [f"- {head}" + (f": {doc.splitlines()[0]}" if doc else "")]
                lines += [""]
            elif callable(obj):
                lines += [f"### `{qual}`", "", "```python", f"{name}{_signature(obj)}", "```", "", _doc(obj), ""]
            else:
                lines += [f"### `{qual}`", "", f"`{obj!r}`" if len(repr(obj)) < 200 else f"`{type(obj).__name__}`",
                          ""]
    return "\n".join(re.sub(r"\s+$", "", ln) for ln in lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
