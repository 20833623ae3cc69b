"""Training one method of a head-to-head: opcd (``python -m opcd.train ...``) or TRL (the worker
process), timed, with its checkpoints collected and pruned to weights."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks.common.process import read_jsonl, run_process

TRL_WORKER = "benchmarks.common.trl_worker"


def prune_checkpoint(path: Path) -> None:
    """Drop optimizer/resume state (written, and timed, like any checkpoint) once a run is over."""
    shutil.rmtree(path / "deepspeed", ignore_errors=True)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (path / name).unlink(missing_ok=True)


def opcd_checkpoints(run_dir: Path) -> list[dict]:
    """``[{"step", "path", "time"}]`` of a finished opcd run (time: when its COMPLETE marker was written)."""
    from opcd.checkpoint import COMPLETE, complete_checkpoints

    return [{"step": int(p.name[5:]), "path": str(p), "time": (p / COMPLETE).stat().st_mtime}
            for p in complete_checkpoints(run_dir)]


def trl_command(job_path: Path) -> list[str]:
    """The TRL worker's command line. ``OPCD_TRL_PYTHON`` names another interpreter: TRL's vLLM mode
    supports vLLM <= 0.31 only, so it runs from a virtualenv of its own (benchmarks/README.md)."""
    return [os.environ.get("OPCD_TRL_PYTHON") or sys.executable, "-m", TRL_WORKER, str(job_path)]


def train_run(method: str, run_dir: Path, steps: int, trl_job: dict | None, opcd_cmd: list[str] | None) -> dict:
    """Train one method in a fresh ``run_dir``: TRL through the worker process with ``trl_job``,
    opcd through ``opcd_cmd``. Returns its raw run record (also written to ``<run>/bench_run.json``):
    ``run_process``'s times plus ``rows`` (TRL: timing.jsonl; opcd: metrics.jsonl), ``checkpoints``
    (``[{"step", "path", "time"}]``) and ``method``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    print(f"[bench] {method}: training {steps} steps -> {run_dir}", flush=True)
    if trl_job is not None:
        (run_dir / "job.json").write_text(json.dumps(trl_job, indent=1))
        rec = run_process(trl_command(run_dir / "job.json"), run_dir / "train.log", watch=None)
        rec["rows"] = read_jsonl(run_dir / "timing.jsonl")
        rec["checkpoints"] = [{"step": r["step"], "path": r["path"], "time": r["time"]}
                              for r in rec["rows"] if r["event"] == "save"]
    else:
        rec = run_process(opcd_cmd, run_dir / "train.log", watch=run_dir / "metrics.jsonl")
        rec["rows"] = read_jsonl(run_dir / "metrics.jsonl")
        rec["checkpoints"] = opcd_checkpoints(run_dir)
    for c in rec["checkpoints"]:
        prune_checkpoint(Path(c["path"]))
    rec["method"] = method
    (run_dir / "bench_run.json").write_text(json.dumps(rec, indent=1))
    print(f"[bench] {method}: done in {rec['t_end'] - rec['t_start']:.0f} s", flush=True)
    return rec


def parse_methods(arg: str, known) -> list[str]:
    """``--methods a,b`` as a list; an unknown name stops the script with the known ones."""
    methods = [m for m in arg.split(",") if m]
    bad = [m for m in methods if m not in known]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; expected {', '.join(known)}")
    return methods
