"""Render every figure in the documents from the committed result JSON under ``benchmarks/results/``.

    python -m benchmarks.render_docs            # rewrite the rendered regions in place
    python -m benchmarks.render_docs --check    # exit 1, with a diff, when a document is out of date

A document holds rendered regions (``benchmarks.common.regions``)::

    <!-- rendered: NAME [ARG] -->
    ...
    <!-- /rendered -->

each written by the function registered as ``NAME`` in ``benchmarks/regions/`` from its JSON. Outside
the regions a document carries no result figures (``tests/benchmarks/test_rendered_docs.py`` checks
both). Adding a result: see "Adding a result" in ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # `python benchmarks/render_docs.py`: the repo root on the path
    sys.path.insert(0, str(ROOT))

import benchmarks.regions  # noqa: E402,F401  (registers every region)
from benchmarks.common.regions import fill  # noqa: E402


def documents(root: Path = ROOT) -> list[Path]:
    """The documents whose figures must come from result files: the READMEs, the benchmark reports,
    and the experiment presets (their comments)."""
    return [root / "README.md", *sorted((root / "benchmarks").glob("*.md")),
            *sorted((root / "conf" / "experiment").glob("*.yaml"))]


def _name(doc: Path, root: Path = ROOT) -> str:
    return str(doc.relative_to(root)) if doc.is_relative_to(root) else str(doc)


def stale(root: Path = ROOT) -> dict[Path, str]:
    """``{document: unified diff}`` of every document whose regions differ from what their JSON renders."""
    out = {}
    for doc in documents(root):
        text = doc.read_text()
        new = fill(text)
        if new != text:
            out[doc] = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                    f"{_name(doc, root)} (committed)",
                                                    f"{_name(doc, root)} (rendered from JSON)"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report out-of-date documents instead of rewriting them")
    args = ap.parse_args(argv)
    if args.check:
        diffs = stale()
        for d in diffs.values():
            print(d)
        return 1 if diffs else 0
    for doc in documents():
        text = doc.read_text()
        new = fill(text)
        if new != text:
            doc.write_text(new)
            print(f"rendered {_name(doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
