"""Expand a SLURM node list (``node[01-03,07],gpu-a1``) into host names, one per line.

Used by launch/slurm.sbatch where ``scontrol show hostnames`` is unavailable (a dry run outside
SLURM). Standard library only: it runs before any environment is set up.
"""
from __future__ import annotations

import itertools
import re
import sys

_GROUP = re.compile(r"\[([^\]]*)\]")


def _split_top_level(nodelist: str) -> list[str]:
    """Split on commas that are not inside ``[...]``."""
    parts, depth, cur = [], 0, ""
    for ch in nodelist:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str) -> list[str]:
    """``01-03,07`` -> ``["01", "02", "03", "07"]``; zero padding follows the range's start."""
    out = []
    for item in spec.split(","):
        lo, sep, hi = item.partition("-")
        if not sep:
            out.append(lo)
            continue
        width = len(lo) if lo.startswith("0") else 0
        out += [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return out


def expand(nodelist: str) -> list[str]:
    """All host names of a SLURM node list, in SLURM's order (several bracket groups: their product)."""
    hosts = []
    for part in _split_top_level(nodelist):
        pieces = _GROUP.split(part)  # text, group, text, group, ..., text
        choices = [[p] if i % 2 == 0 else _expand_range(p) for i, p in enumerate(pieces)]
        hosts += ["".join(combo) for combo in itertools.product(*choices)]
    return hosts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python launch/nodelist.py 'node[01-02]'")
    print("\n".join(expand(sys.argv[1])))
