"""Rendered regions: the parts of a document that a function writes from a committed result JSON.

A region in a document::

    <!-- rendered: NAME [ARG] -->
    ... whatever ``NAME``'s function renders from its JSON ...
    <!-- /rendered -->

In a YAML file the markers are comments (``# <!-- rendered: NAME -->``) and every rendered line gets
the same ``# `` prefix. ``ARG`` (optional) is passed to the function and fills ``{arg}`` in its source
file names, so one function serves several reports (``reproduction toy``, ``reproduction smollm2``).

A function is registered with :func:`region`; it receives the parsed JSON of each source (under
``benchmarks/results/``), plus ``arg`` when it takes one, and returns Markdown. When a source file
does not exist the region renders ``missing`` instead ("not measured yet"), so a document can name a
measurement before it is made.
"""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parents[1] / "results"
# A marker stands alone on its line, after indentation or a YAML comment sign (the prefix of the body).
START = re.compile(r"^(?P<prefix>[ \t]*(?:#[ \t]*)?)<!-- rendered: (?P<name>[\w.-]+)(?: (?P<arg>[\w.-]+))? -->[ \t]*$")
END = "<!-- /rendered -->"
END_LINE = re.compile(r"^[ \t]*(?:#[ \t]*)?<!-- /rendered -->[ \t]*$")


@dataclass
class Region:
    name: str
    sources: tuple[str, ...]
    fn: Callable[..., str]
    missing: str | None = None
    takes_arg: bool = field(init=False)

    def __post_init__(self):
        self.takes_arg = "arg" in inspect.signature(self.fn).parameters


REGIONS: dict[str, Region] = {}


def region(name: str, *sources: str, missing: str | None = None):
    """Register ``fn`` as the renderer of region ``name`` from the JSON files ``sources`` (names under
    ``benchmarks/results/``; ``{arg}`` is replaced by the region's argument; a name ending in ``?`` is
    optional: ``fn`` gets None when the file does not exist)."""
    def deco(fn):
        if name in REGIONS:
            raise ValueError(f"region {name!r} is registered twice")
        REGIONS[name] = Region(name, sources, fn, missing)
        return fn
    return deco


def not_measured(paths: list[Path]) -> str:
    names = ", ".join(f"`benchmarks/results/{p.name}`" for p in paths)
    return f"_Not measured yet: {names} does not exist._"


def render(name: str, arg: str | None = None, results: Path = RESULTS) -> str:
    """The Markdown of region ``name`` (``arg``: its argument) from the JSON files under ``results``."""
    if name not in REGIONS:
        raise KeyError(f"no rendered region named {name!r} (known: {', '.join(sorted(REGIONS))})")
    reg = REGIONS[name]
    paths = [(results / s.rstrip("?").format(arg=arg), s.endswith("?")) for s in reg.sources]
    absent = [p for p, optional in paths if not optional and not p.exists()]
    if absent:
        return reg.missing if reg.missing is not None else not_measured(absent)
    data = [json.loads(p.read_text()) if p.exists() else None for p, _ in paths]
    kwargs = {"arg": arg} if reg.takes_arg else {}
    return reg.fn(*data, **kwargs).rstrip("\n")


def wrap(name: str, body: str, arg: str | None = None) -> str:
    """``body`` between the markers of region ``name`` (for scripts that write a whole rendered file)."""
    head = f"<!-- rendered: {name}{' ' + arg if arg else ''} -->"
    return f"{head}\n{body.rstrip()}\n{END}\n"


def spans(text: str) -> list[tuple[int, int, str, str | None, str]]:
    """``(first body line, end marker line, name, arg, prefix)`` of every region in ``text`` (0-based
    line numbers). Raises on an unclosed or nested region."""
    out, lines, open_ = [], text.split("\n"), None
    for i, line in enumerate(lines):
        m = START.match(line)
        if m:
            if open_ is not None:
                raise ValueError(f"line {i + 1}: region {m['name']!r} starts inside region {open_[1]!r}")
            open_ = (i, m["name"], m["arg"], m["prefix"])
        elif END_LINE.match(line):
            if open_ is None:
                raise ValueError(f"line {i + 1}: {END} without a region")
            out.append((open_[0] + 1, i, open_[1], open_[2], open_[3]))
            open_ = None
    if open_ is not None:
        raise ValueError(f"line {open_[0] + 1}: region {open_[1]!r} is not closed with {END}")
    return out


def fill(text: str, renderer: Callable[[str, str | None], str] = render) -> str:
    """``text`` with every region's body replaced by what its function renders now."""
    lines = text.split("\n")
    for first, end, name, arg, prefix in reversed(spans(text)):
        body = renderer(name, arg).split("\n")
        lines[first:end] = [(prefix + b).rstrip() if b else prefix.rstrip() for b in body]
    return "\n".join(lines)


def outside(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line that is not inside a rendered region (1-based numbers;
    the markers themselves excluded)."""
    inside = set()
    for first, end, *_ in spans(text):
        inside.update(range(first - 1, end + 1))
    return [(i + 1, line) for i, line in enumerate(text.split("\n")) if i not in inside]
