"""``benchmarks/`` is a package at the repository root (not installed): tests import its modules as
``benchmarks.<name>``, so the root goes on the path (``python -m pytest`` from the root has it
already; a bare ``pytest`` does not)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
