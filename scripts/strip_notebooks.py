"""Strips outputs and execution counts from notebooks/*.ipynb (they are committed clean).

    python scripts/strip_notebooks.py [FILES...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def strip(path: Path) -> bool:
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell["outputs"], cell["execution_count"] = [], None
            changed = True
        if cell.get("metadata", {}).pop("execution", None) is not None:
            changed = True
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    files = [Path(a) for a in sys.argv[1:]] or sorted((root / "notebooks").glob("*.ipynb"))
    for f in files:
        print(f"{f}: {'stripped' if strip(f) else 'clean'}")
