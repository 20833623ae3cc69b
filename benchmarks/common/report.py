"""Number formatting for the benchmarks' Markdown tables ("–" for a missing value), and JSON writing."""
from __future__ import annotations

import json
from pathlib import Path

MISSING = "–"


def pct(x) -> str:
    """A fraction as a percentage with one decimal: ``0.5 -> "50.0%"``."""
    return MISSING if x is None else f"{100 * x:.1f}%"


def num(x, fmt: str = "{:.2f}") -> str:
    return MISSING if x is None else fmt.format(x)


def mmss(sec) -> str:
    """Seconds as ``"<m> min <ss> s"``."""
    return MISSING if sec is None else f"{int(sec // 60)} min {int(round(sec % 60)):02d} s"


def write_json(path: Path, obj, indent: int = 1) -> Path:
    """Write ``obj`` to ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent))
    return path
