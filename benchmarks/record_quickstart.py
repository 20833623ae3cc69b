"""Record one measured run of the README's quickstart into ``benchmarks/results/quickstart.json``.

    # command 1, timed from a fresh clone (e.g. `/usr/bin/time -f %e bash launch/quickstart.sh`):
    python -m benchmarks.record_quickstart run outputs/toy_opcd/<time> --wall-s 666 --setup-s 200 --fresh-clone
    # command 1 again (set up already):
    python -m benchmarks.record_quickstart run outputs/toy_opcd/<time> --wall-s 351
    # command 2 (`bash launch/test.sh`), with the counts of its last line:
    python -m benchmarks.record_quickstart tests --wall-s 1320 --setup-s 180 --passed 681 --failed 0 --skipped 2 --fresh-clone

Accuracies come from the run's ``metrics.jsonl`` (its first and last evaluation); the machine is this
one (``benchmarks.common.machine``) unless ``--machine`` names it. Each call appends one run; the README
then renders ranges over all of them (``python -m benchmarks.render_docs``). Schema: the docstring of
``benchmarks.regions.quality``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:
    sys.path.insert(0, str(ROOT))

RESULT = ROOT / "benchmarks" / "results" / "quickstart.json"
KEYS = {"distilled_none": "eval/distilled/none", "distilled_system": "eval/distilled/system",
        "others_system": "eval/other/system"}


def run_record(rows: list[dict], wall_s: float, setup_s: float, fresh: bool) -> dict:
    """One quickstart run from its ``metrics.jsonl`` rows: each metric at the first and the last evaluation."""
    evals = [r for r in rows if KEYS["distilled_none"] in r]
    if len(evals) < 2:
        raise ValueError("metrics.jsonl needs an evaluation before and after training (eval at step 0 and at the end)")
    first, last = evals[0], evals[-1]
    rec = {"fresh_clone": fresh, "wall_s": wall_s, "setup_s": setup_s, "steps": last.get("step")}
    for name, key in KEYS.items():
        rec[f"{name}_before"], rec[f"{name}_after"] = first.get(key), last.get(key)
    rec["harm_after"] = last.get("eval/distilled/harm_system")
    return rec


def add(result: dict, kind: str, rec: dict, machine: str, eval_n: int | None) -> dict:
    """``result`` with ``rec`` appended to its ``runs`` (kind "run") or ``tests``; machine and date set."""
    out = {"machine": machine, "runs": [], **result}
    out["date"] = rec["date"] = time.strftime("%Y-%m-%d")  # the latest run's; each run keeps its own
    if out["machine"] != machine:
        raise ValueError(f"quickstart.json holds runs on {out['machine']!r}, not {machine!r}: one machine per file")
    out.setdefault("tests", [])
    out["runs" if kind == "run" else "tests"].append(rec)
    if kind == "run":
        out["steps"] = rec.get("steps", out.get("steps"))
        if eval_n:
            out["eval_prompts_per_rule"] = eval_n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["run", "tests"])
    ap.add_argument("run_dir", nargs="?", type=Path, help="the run's output directory (kind run)")
    ap.add_argument("--wall-s", type=float, required=True, help="wall seconds of the whole command")
    ap.add_argument("--setup-s", type=float, default=0.0, help="seconds of it spent in launch/setup.sh")
    ap.add_argument("--fresh-clone", action="store_true")
    ap.add_argument("--passed", type=int)
    ap.add_argument("--failed", type=int)
    ap.add_argument("--skipped", type=int)
    ap.add_argument("--machine", help="the machine in words (default: cores and CPU model of this one)")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args(argv)
    from benchmarks.common.machine import environment

    machine = args.machine or environment()["cpu"]
    eval_n = None
    if args.kind == "run":
        if args.run_dir is None:
            ap.error("kind run needs the run's output directory")
        rows = [json.loads(x) for x in (args.run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rec = run_record(rows, args.wall_s, args.setup_s, args.fresh_clone)
        cfg = args.run_dir / ".hydra" / "config.yaml"
        if cfg.exists():
            import yaml

            eval_n = (yaml.safe_load(cfg.read_text()).get("task") or {}).get("eval_n_per_rule")
    else:
        if None in (args.passed, args.failed, args.skipped):
            ap.error("kind tests needs --passed, --failed and --skipped")
        rec = {"fresh_clone": args.fresh_clone, "wall_s": args.wall_s, "setup_s": args.setup_s,
               "passed": args.passed, "failed": args.failed, "skipped": args.skipped}
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(add(old, args.kind, rec, machine, eval_n), indent=1) + "\n")
    print(f"recorded {'a quickstart run' if args.kind == 'run' else 'a test-suite run'} in {args.out}; "
          "now run `python -m benchmarks.render_docs`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
