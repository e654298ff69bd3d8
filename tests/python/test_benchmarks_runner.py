"""``python -m benchmarks`` (benchmarks/run.py): runs benchmark scripts, then rebuilds the
generated block of RESULTS.md and its plots from the JSON (issue 9)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
run = importlib.util.module_from_spec(_spec)
sys.modules["benchmarks_run"] = run  # dataclasses look their module up by name
_spec.loader.exec_module(run)

pytest.importorskip("matplotlib")


def test_report_from_committed_data(tmp_path):
    results = tmp_path / "RESULTS.md"
    assert run.main(["--report-only", "--results", str(results)]) == 0
    text = results.read_text()
    assert text.count(run.BEGIN) == 1 and text.count(run.END) == 1
    for heading in ("Quality against bits per weight", "CPU quantized matmul", "CUDA quantized matmul",
                    "Quantization time and peak memory"):
        assert heading in text
    assert "No data" not in text  # every section has committed JSON behind it
    for png in ("quality_vs_bits.png", "cpu_qlinear.png", "cuda_qlinear.png", "quant_time_memory.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
    # Every source the tables cite exists.
    for cited in set(__import__("re").findall(r"`(benchmarks/data/[^`]+\.json)`", text)):
        assert (ROOT / cited).exists(), cited


def test_block_replaced_in_place_and_text_kept(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Machine\n\nsome machine\n\n## Hand-written\n\nanalysis\n")
    for _ in range(2):
        assert run.main(["--report-only", "--results", str(results), "--data", str(tmp_path / "none")]) == 0
    text = results.read_text()
    assert text.count(run.BEGIN) == 1
    assert text.index("## Machine") < text.index(run.BEGIN) < text.index("## Hand-written")
    assert "some machine" in text and "analysis" in text
    assert "No data" in text  # an empty data folder says what to run


def test_gpu_json_fills_the_cuda_section(tmp_path):
    src = ROOT / "benchmarks" / "data" / "cuda_qlinear_h100_m1.json"
    gpu = tmp_path / "from_gpu.json"
    shutil.copy(src, gpu)
    results = tmp_path / "RESULTS.md"
    assert run.main(["--report-only", "--results", str(results), "--data", str(tmp_path / "none"),
                     "--gpu-json", str(gpu)]) == 0
    text = results.read_text()
    assert "from_gpu.json" in text and "M=1 (≥3.2x)" in text
    with pytest.raises(SystemExit):
        run.main(["--report-only", "--results", str(results), "--gpu-json", str(tmp_path / "missing.json")])


def test_quick_run_of_cheap_benchmarks(tmp_path):
    data, results = tmp_path / "data", tmp_path / "RESULTS.md"
    rc = run.main(["--quick", "--only", "gptq_solver_cpu", "qat_step_cpu", "--data", str(data),
                   "--results", str(results)])
    assert rc == 0
    for name in ("gptq_solver_cpu", "qat_step_cpu"):
        d = json.loads((data / f"{name}.json").read_text())
        assert run.classify(d) == name
    text = results.read_text()
    assert "`gptq_solver_cpu`: ok" in text and "QAT training step (cpu" in text


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "cuda_qlinear" in out.stdout and "gptq_quality_gemma3" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope", "--data", "/nonexistent"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown benchmark" in bad.stderr
