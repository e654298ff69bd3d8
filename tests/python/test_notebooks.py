"""The notebooks run top to bottom (issue 9), on the CPU, through a Jupyter kernel
(nbclient), from notebooks/ as their working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    try:
        import quantcore

        quantcore.assets.demo_model_dir()
    except FileNotFoundError:
        pytest.skip("the demo model is not prepared (scripts/prepare_assets.py)")
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TQDM_MININTERVAL="5")
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # the kernel process gets env
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
