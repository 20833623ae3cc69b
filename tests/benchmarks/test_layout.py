"""The benchmarks' layout: small files, shared pieces imported normally, every script runnable both
as ``python benchmarks/<name>.py`` and as ``python -m benchmarks.<name>`` from the repository root."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "benchmarks").rglob("*.py"))


def test_no_benchmark_file_exceeds_400_lines():
    assert len(SOURCES) > 10
    long = {str(p.relative_to(REPO)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_no_benchmark_loads_another_by_file_path():
    for p in SOURCES:
        text = p.read_text()
        for needle in ("spec_from_file_location", "run_path(", "SourceFileLoader"):
            assert needle not in text, f"{p.relative_to(REPO)} loads a module by file path ({needle})"


@pytest.mark.parametrize("cmd", [["benchmarks/vs_trl_smollm2.py"], ["benchmarks/bench_vs_trl_toy.py"],
                                 ["benchmarks/reproduce.py"], ["-m", "benchmarks.vs_trl_smollm2"]])
def test_scripts_run_by_path_and_as_modules(cmd):
    out = subprocess.run([sys.executable, *cmd, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_trl_worker_is_a_module():
    out = subprocess.run([sys.executable, "-m", "benchmarks.common.trl_worker"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "usage: python -m benchmarks.common.trl_worker JOB.json" in out.stderr
