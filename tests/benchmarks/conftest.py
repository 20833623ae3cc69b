"""Benchmark scripts are not a package: tests load them by path."""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as module ``name`` (registered in sys.modules, where
    dataclasses resolve string annotations)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def benchmark_module():
    return load_benchmark
