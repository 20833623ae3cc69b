"""Step time of finished training runs, side by side (e.g. the default run before and after a refactor).

    python -m benchmarks.step_time --label "before (6ea0505, fp32)" RUN_DIR_A --label "after, fp32" RUN_DIR_B ...

Reads each run's ``metrics.jsonl`` and summarises ``step/seconds`` over the steady steps (the first
step, which includes warm-up, and steps that end with an evaluation are left out: ``step/seconds`` is
taken before the evaluation, but the evaluation's weight push is inside it) as mean, median and
quartiles, with each phase's mean (rollout, teacher, learner, sync). Appends one entry per call to
``benchmarks/results/step_time.json`` with the machine and the procedure given by ``--how``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:
    sys.path.insert(0, str(ROOT))

RESULT = ROOT / "benchmarks" / "results" / "step_time.json"
PHASES = {"rollout": "rollout/seconds", "teacher": "teacher/seconds", "learner": "learner/seconds",
          "sync": "sync/seconds"}


def steady_rows(rows: list[dict], eval_every: int) -> list[dict]:
    """Training rows without the first step and without evaluation steps."""
    return [r for r in rows if r.get("step", 0) > 1 and "step/seconds" in r
            and not (eval_every and r["step"] % eval_every == 0) and not any(k.startswith("eval/") for k in r)]


def summarise(rows: list[dict], eval_every: int) -> dict:
    """Steady step time (s): mean, median, quartiles; each phase's mean; the number of steps."""
    steady = steady_rows(rows, eval_every)
    xs = sorted(r["step/seconds"] for r in steady)
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"steps": len(xs), "mean_s": statistics.fmean(xs), "median_s": statistics.median(xs), "q1_s": q[0],
            "q3_s": q[2], "phases_mean_s": {p: statistics.fmean(r.get(k, 0.0) for r in steady) for p, k in PHASES.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", action="append", required=True, help="name of the next run directory")
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (hydra.run.dir), one per --label")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--name", default="default run", help="what was measured")
    ap.add_argument("--how", default="", help="the procedure (commands, order)")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_intermixed_args(argv)
    if len(args.label) != len(args.runs):
        ap.error("give one --label per run directory")
    from benchmarks.common.machine import environment

    runs = []
    for label, d in zip(args.label, args.runs):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        runs.append({"label": label, **summarise(rows, args.eval_every)})
        print(label, {k: round(v, 3) if isinstance(v, float) else v for k, v in runs[-1].items() if k != "phases_mean_s"})
    data = json.loads(args.out.read_text()) if args.out.exists() else {"entries": []}
    data["entries"].append({"name": args.name, "machine": environment(), "how": args.how, "runs": runs})
    args.out.write_text(json.dumps(data, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
