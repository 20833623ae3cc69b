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


def times(x, fmt: str = "{:.2f}") -> str:
    """A ratio with the multiplication sign: ``1.279 -> "1.28×"``."""
    return MISSING if x is None else fmt.format(x) + "×"


def span(values, fmt=pct) -> str:
    """The range of ``values`` formatted with ``fmt``: ``"a–b"``, or one value when they agree."""
    vals = [v for v in values if v is not None]
    if not vals:
        return MISSING
    lo, hi = fmt(min(vals)), fmt(max(vals))
    if lo == hi:
        return lo
    unit = next((u for u in ("%", "×") if lo.endswith(u) and hi.endswith(u)), "")
    return f"{lo[:len(lo) - len(unit)]}–{hi}"


def runs(n: int) -> str:
    """``1 -> "one run"``, ``3 -> "3 runs"``."""
    return "one run" if n == 1 else f"{n} runs"


def machine(env: dict | None, source: str = "the result file") -> str:
    """The machine a result file names (``environment`` of ``benchmarks.common.machine``), in words."""
    if not env:
        return f"machine not recorded in {source}"
    parts = [env.get("cpu") or (f"{env['cpus']} CPUs, {env.get('machine', '')}".strip(", ") if "cpus" in env else "")]
    if env.get("date"):
        parts.append(env["date"])
    return ", ".join(p for p in parts if p) or f"machine not recorded in {source}"
