"""Region of the reliability measurements (``docs/reliability.py`` -> ``reliability.json``): each fault or
bad input, the line the user sees (captured from the real run), the exit code, when the line came, and
what was found kept on disk afterwards. ``docs/reliability.md`` holds the full lines (:func:`table`)."""
from __future__ import annotations

from benchmarks.common.regions import region
from benchmarks.common.report import machine

SHORT = 150  # characters of each line shown in the README's table (the full line is in docs/reliability.md)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(d: dict, width: int | None = None) -> str:
    """The Markdown table of ``d["rows"]``; ``width`` cuts each line the user sees to that many characters."""
    lines = ["| fault or bad input | what the user sees | exit | after | what is kept |", "|---|---|---:|---:|---|"]
    for r in d["rows"]:
        said = r["line"] if width is None or len(r["line"]) <= width else r["line"][:width].rstrip() + " …"
        extra = f" (and {r['tracebacks']} traceback(s))" if r.get("tracebacks") else ""
        lines.append(f"| {_cell(r['case'])} | `{_cell(said)}`{extra} | {r['exit']} | {r['seconds']:.0f} s | "
                     f"{_cell(r['kept'])} |")
    return "\n".join(lines)


def footer(d: dict) -> str:
    return (f"{len(d['rows'])} cases, each run for real on the toy model by `python docs/reliability.py` "
            f"({machine(d.get('environment'), '`reliability.json`')}; load average {d['load']:.1f} at the start, "
            f"{d['minutes']:.0f} min in all). *after*: seconds until the line appeared, start-up included.")


@region("reliability", "reliability.json")
def reliability(d: dict) -> str:
    return (table(d, SHORT) + "\n\n" + footer(d)
            + " Full lines: [docs/reliability.md](docs/reliability.md).")
