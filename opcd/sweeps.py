"""One results table for a Hydra sweep: a row per job, its overrides, final metrics and speed.

    python -m opcd.sweeps multirun/2026-01-01_12-00-00               # Markdown on stdout, CSV beside the jobs
    python -m opcd.sweeps multirun/2026-01-01_12-00-00 --out table.md  # also table.md, and table.csv beside it

A job is any directory below MULTIRUN_DIR holding ``.hydra/overrides.yaml`` (what Hydra writes for
each job, whichever launcher ran it). ``final_metrics.json`` (written by opcd.loop at the end of a
run) gives the metric columns; ``metrics.jsonl`` gives the steps done and the mean seconds per step.
A job without ``final_metrics.json`` (still running, crashed, killed) is listed as incomplete.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

FINAL = "final_metrics.json"
METRICS = "metrics.jsonl"
OVERRIDES = Path(".hydra") / "overrides.yaml"


@dataclass
class Job:
    path: Path  # the job's output directory
    num: int | None  # Hydra's job number (hydra.job.num)
    overrides: list[str]  # the job's command-line overrides, as Hydra recorded them
    final: dict[str, float] | None  # final metrics; None when the job did not finish
    steps: int  # training steps logged in metrics.jsonl
    seconds_per_step: float | None  # mean of the logged `step/seconds`


def find_jobs(root: Path) -> list[Path]:
    """Job directories under ``root`` (``root`` itself when it is a single run), in job order."""
    dirs = {p.parent.parent for p in Path(root).rglob("overrides.yaml") if p.parent.name == ".hydra"}
    nums = {d: job_number(d) for d in dirs}
    return sorted(dirs, key=lambda d: (nums[d] is None, nums[d] or 0, str(d)))


def job_number(job_dir: Path) -> int | None:
    """``hydra.job.num`` from ``.hydra/hydra.yaml``; else the leading digits of the directory name."""
    hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.exists():
        try:
            num = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("job", {}).get("num")
            if isinstance(num, int):
                return num
        except yaml.YAMLError:
            pass
    m = re.match(r"(\d+)", job_dir.name)
    return int(m.group(1)) if m else None


def parse_metrics_lines(text: str) -> list[dict]:
    """The JSON objects of a metrics.jsonl text; blank and unparsable lines (a killed job's half-written
    last line) are skipped."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def progress(rows: list[dict]) -> tuple[int, float | None]:
    """(steps done, mean seconds per step) from metrics rows. Training steps are the rows carrying
    ``step/seconds`` (step 0 is the evaluation before training)."""
    timed = [r for r in rows if isinstance(r.get("step/seconds"), (int, float))]
    steps = max((int(r.get("step", 0)) for r in timed), default=0)
    mean = sum(r["step/seconds"] for r in timed) / len(timed) if timed else None
    return steps, mean


def load_job(job_dir: Path) -> Job:
    """Read one job directory; never raises for missing or damaged result files."""
    job_dir = Path(job_dir)
    try:
        overrides = [str(o) for o in yaml.safe_load((job_dir / OVERRIDES).read_text()) or []]
    except (OSError, yaml.YAMLError):
        overrides = []
    try:
        final = json.loads((job_dir / FINAL).read_text())
        final = final if isinstance(final, dict) else None
    except (OSError, json.JSONDecodeError):
        final = None
    try:
        rows = parse_metrics_lines((job_dir / METRICS).read_text())
    except OSError:
        rows = []
    steps, sps = progress(rows)
    return Job(job_dir, job_number(job_dir), overrides, final, steps, sps)


def split_overrides(jobs: list[Job]) -> tuple[list[str], list[list[str]]]:
    """(overrides every job shares, each job's remaining overrides): the table shows what varies.
    With a single job nothing is called shared."""
    if len(jobs) < 2:
        return [], [j.overrides for j in jobs]
    shared = [o for o in jobs[0].overrides if all(o in j.overrides for j in jobs[1:])]
    return shared, [[o for o in j.overrides if o not in shared] for j in jobs]


def build_table(jobs: list[Job], all_overrides: bool = False) -> tuple[list[str], list[list[object]], list[str]]:
    """(header, rows, shared overrides). Rows hold raw values, None for a missing cell. The overrides
    column holds what varies between jobs, or every override with ``all_overrides`` (shared: [])."""
    shared, varying = split_overrides(jobs)
    if all_overrides:
        shared, varying = [], [j.overrides for j in jobs]
    metric_keys = sorted({k for j in jobs if j.final for k in j.final})
    header = ["job", "overrides", "status", *metric_keys, "steps", "s/step"]
    rows = []
    for job, ov in zip(jobs, varying):
        final = job.final or {}
        rows.append([job.num if job.num is not None else job.path.name, " ".join(ov),
                     "done" if job.final is not None else "incomplete",
                     *[final.get(k) for k in metric_keys], job.steps, job.seconds_per_step])
    return header, rows, shared


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def to_markdown(header: list[str], rows: list[list[object]], shared: list[str] = ()) -> str:
    """A GitHub Markdown table (``|`` in cells escaped); missing cells show as an em dash."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = []
    if shared:
        out += [f"Shared overrides: `{' '.join(shared)}`", ""]
    out += [line(header), line(["---"] * len(header))]
    out += [line([_cell(v) or "—" for v in row]) for row in rows]
    return "\n".join(out) + "\n"


def to_csv(header: list[str], rows: list[list[object]]) -> str:
    """The same table as CSV, full precision; missing cells empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m opcd.sweeps", description=__doc__.splitlines()[0])
    p.add_argument("multirun_dir", type=Path, help="a Hydra sweep directory, e.g. multirun/<date_time>")
    p.add_argument("--out", type=Path, help="also write the Markdown here, and the CSV beside it (.csv)")
    args = p.parse_args(argv)
    if not args.multirun_dir.is_dir():
        p.error(f"{args.multirun_dir} is not a directory")
    jobs = [load_job(d) for d in find_jobs(args.multirun_dir)]
    if not jobs:
        p.error(f"no Hydra jobs (.hydra/overrides.yaml) under {args.multirun_dir}")
    header, rows, shared = build_table(jobs)
    md = to_markdown(header, rows, shared)
    sys.stdout.write(md)
    csv_path = args.out.with_suffix(".csv") if args.out else args.multirun_dir / "results.csv"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
    csv_path.write_text(to_csv(*build_table(jobs, all_overrides=True)[:2]))  # self-contained: every override
    done = sum(j.final is not None for j in jobs)
    print(f"[sweeps] {len(jobs)} jobs ({done} done, {len(jobs) - done} incomplete); CSV: {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
