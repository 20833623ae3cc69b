"""Measure the reliability table: each fault or bad input, run for real, and the line the user sees.

    .venv/bin/python docs/reliability.py                  # ~10-30 min on 2 CPU cores; then:
    .venv/bin/python -m benchmarks.render_docs           # the README's rendered region `reliability`
    .venv/bin/python docs/reliability.py --only inputs   # some groups (checkpoints, signals, inputs): printed only

Writes ``benchmarks/results/reliability.json`` and ``docs/reliability.md`` (full lines); the README's
short table is the rendered region ``reliability`` (``benchmarks/regions/reliability.py``).

Every case launches ``python -m opcd.train`` (or ``python -m opcd.eval``) on the shipped toy model in
a scratch folder, injects the fault (a truncated checkpoint file, a deleted folder, a second run, Ctrl-C,
SIGTERM, SIGKILL, a bad file or override), and records the exit code, the seconds until the line
appeared, the line itself, and what was checked on disk afterwards. Nothing in the table is typed by
hand except the case names: a case whose expected line does not appear fails the script.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from opcd.checkpoint import complete_checkpoints, verify_checkpoint  # noqa: E402
from opcd.run_dir import LOCK, run_contents  # noqa: E402

SMALL = ["logger=none", "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4", "task.train_size=12",
         "rollout.num_workers=1", "keep_checkpoints=5"]


class Run:
    """A child process whose merged output is read line by line, each line with its time since start."""

    def __init__(self, args: list[str]):
        self.t0 = time.time()
        self.p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True, errors="replace")
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.p.stdout:
            for line in raw.rstrip("\n").split("\r"):  # tqdm redraws with \r
                self.lines.append((time.time() - self.t0, line))

    def wait(self, timeout=900) -> int:
        rc = self.p.wait(timeout)
        self.reader.join()
        return rc

    def find(self, needle: str) -> tuple[float, str]:
        for t, line in self.lines:
            if needle in line:
                return t, line
        tail = "\n".join(line for _, line in self.lines[-40:])
        raise AssertionError(f"expected a line with {needle!r}; the output ended with:\n{tail}")

    def tracebacks(self) -> int:
        return sum("Traceback" in line for _, line in self.lines)


def train(folder: Path, *overrides: str) -> Run:
    return Run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={folder}", *overrides])


def wait_for(path: Path, run: Run | None = None, timeout=600) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if run is not None and run.p.poll() is not None:
            raise AssertionError(f"the run ended before {path} appeared: {run.lines[-5:]}")
        if time.time() > deadline:
            raise TimeoutError(path)
        time.sleep(0.2)


def nothing(folder: Path, extra: str = "") -> str:
    """Checked on disk: the folder holds no checkpoint and no log."""
    return ("nothing written" if not run_contents(folder) else f"UNEXPECTED: {run_contents(folder)}") + extra


def steps_of(folder: Path) -> list[str]:
    return [p.name.replace("step_", "") for p in complete_checkpoints(folder)]


def rows_of(folder: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]


@dataclass
class Row:
    case: str
    run: Run
    needle: str
    rc: int
    kept: str

    def record(self, scratch: Path) -> dict:
        """The JSON row: the captured line (scratch and repository paths written as <dir> and <repo>)."""
        t, line = self.run.find(self.needle)
        line = line.replace(str(scratch), "<dir>").replace(str(ROOT), "<repo>").replace(sys.executable, "python")
        return {"case": self.case, "line": line, "exit": self.rc, "seconds": round(t, 1),
                "tracebacks": self.run.tracebacks(), "kept": self.kept}


# ------------------------------------------------------------------------------------------ cases
def checkpoint_cases(s: Path) -> list[Row]:
    """One real run (4 steps, a checkpoint each), a second run started next to it, then damaged copies."""
    rows = []
    base = s / "run"
    first = train(base, *SMALL, "steps=4", "save_every=1")
    wait_for(base / LOCK, first)
    second = train(base, *SMALL, "steps=4", "save_every=1")
    rc = second.wait()
    assert first.wait() == 0, first.lines[-5:]
    one_writer = rows_of(base) == list(range(5))
    rows.append(Row("second run in the same folder", second, "opcd.train: error:", rc,
                    f"the first run, untouched: checkpoints {', '.join(steps_of(base))}, "
                    f"{'one metrics row per step' if one_writer else 'MIXED metrics rows'}"))

    def copy(name: str) -> Path:
        dst = s / name
        shutil.copytree(base, dst)
        (dst / LOCK).unlink(missing_ok=True)
        return dst

    d = copy("truncated")
    w = d / "checkpoints/step_4/model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    ev = Run([sys.executable, "-m", "opcd.eval", f"model.path={d}/checkpoints/step_4", f"hydra.run.dir={s}/eval"])
    rc = ev.wait()
    rows.append(Row("`python -m opcd.eval` on that checkpoint", ev, "opcd.eval: error:", rc,
                    f"nothing written (no eval table: {not (s / 'eval' / 'eval.json').exists()})"))
    r = train(d, *SMALL, "steps=4", "save_every=1", "resume=auto")
    rc = r.wait()
    r.find("resumed from")
    rows.append(Row("newest checkpoint's `model.safetensors` cut in half, `resume=auto`", r, "skipping damaged", rc,
                    f"resumed from step_3; step_4 redone and intact again: {verify_checkpoint(d / 'checkpoints/step_4') is None}"))

    d = copy("no_deepspeed")
    shutil.rmtree(d / "checkpoints/step_4/deepspeed")
    r = train(d, *SMALL, "steps=4", "save_every=1", "resume=auto")
    rc = r.wait()
    rows.append(Row("newest checkpoint's `deepspeed/` deleted, `resume=auto`", r, "skipping damaged", rc,
                    f"resumed from step_3; metrics rows {rows_of(d)}"))

    d = copy("all_damaged")
    for c in complete_checkpoints(d):
        (c / "trainer_state.json").write_text("{}")
    r = train(d, *SMALL, "steps=4", "resume=auto")
    rows.append(Row("every checkpoint damaged, `resume=auto`", r, "opcd.train: error:", r.wait(),
                    f"all checkpoints left as they were ({', '.join(steps_of(d))})"))

    d = copy("changed")
    r = train(d, *SMALL, "steps=4", "resume=auto", "algo.lr=0.01")
    rows.append(Row("`resume=auto` with a changed `algo.lr`", r, "opcd.train: error:", r.wait(),
                    f"everything (checkpoints {', '.join(steps_of(d))})"))

    d = copy("fresh")
    r = train(d, *SMALL, "steps=4")
    rows.append(Row("new run (no `resume`) in a folder holding a run", r, "opcd.train: error:", r.wait(),
                    f"everything (checkpoints {', '.join(steps_of(d))}, {len(rows_of(d))} metrics rows)"))
    r = train(d, *SMALL, "steps=1", "overwrite=true")
    rc = r.wait()
    prev = next(d.glob("previous-*"))
    rows.append(Row("the same with `overwrite=true`", r, "overwrite=true: moved", rc,
                    f"old run in `previous-<time>/` (checkpoints {', '.join(steps_of(prev))}); new run: "
                    f"checkpoints {', '.join(steps_of(d))}"))
    return rows


def signal_cases(s: Path) -> list[Row]:
    rows = []
    for case, how in [("Ctrl-C during training", "int"), ("SIGTERM (`kill <pid>`) during training", "term")]:
        d = s / f"stop_{how}"
        r = train(d, *SMALL, "steps=40", "save_every=1")
        wait_for(d / "checkpoints/step_1/COMPLETE", r)
        if how == "int":
            os.killpg(r.p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        else:
            os.kill(r.p.pid, signal.SIGTERM)  # `kill <pid>`: the driver only
        rc = r.wait()
        rows.append(Row(case, r, "opcd.train: stopped by", rc,
                        f"checkpoints {', '.join(steps_of(d))} (intact); lock released: {not (d / LOCK).exists()}"))
    d = s / "killed"
    r = train(d, *SMALL, "steps=40", "save_every=1")
    wait_for(d / "checkpoints/step_1/COMPLETE", r)
    os.killpg(r.p.pid, signal.SIGKILL)
    r.wait()
    time.sleep(2)
    r = train(d, *SMALL, "steps=2", "save_every=1", "resume=auto")
    rc = r.wait()
    r.find("resumed from")
    rows.append(Row("SIGKILL (crash), then `resume=auto`", r, "taking over the lock", rc,
                    f"resumed from the newest checkpoint; metrics rows {rows_of(d)}"))
    return rows


def input_cases(s: Path) -> list[Row]:
    rows = []
    bad = s / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "abc", "context": "Reverse it."}\n{"prompt": "caf\xe9", "context": ""}\n')
    r = train(s / "utf8", "logger=none", "task=jsonl", f"task.train_file={bad}")
    rows.append(Row("invalid UTF-8 in a JSONL file", r, "opcd.train: error:", r.wait(), nothing(s / "utf8")))
    long = s / "long.jsonl"
    long.write_text(json.dumps({"prompt": "abc", "context": ""}) + "\n" + json.dumps({"prompt": "x" * 400, "context": ""}) + "\n")
    r = train(s / "long", "logger=none", "task=jsonl", f"task.train_file={long}")
    rows.append(Row("a record longer than `model.max_model_len`", r, "opcd.train: error:", r.wait(),
                    nothing(s / "long")))
    r = train(s / "plus", "logger=none", "+algo.lrr=1e-3")
    rows.append(Row("`+algo.lrr=1e-3` (Hydra's hint for a misspelled key)", r, "opcd.train: error:", r.wait(),
                    nothing(s / "plus")))
    r = train(s / "relpath", "logger=none", "model.path=models/mine")
    rows.append(Row("relative `model.path` that does not exist", r, "opcd.train: error:", r.wait(),
                    nothing(s / "relpath", "; the hub is not asked")))
    m = s / "no_tokenizer"
    shutil.copytree(ROOT / "opcd/assets/toy-model", m)
    (m / "tokenizer.json").unlink()
    r = train(s / "notok", "logger=none", f"model.path={m}")
    rows.append(Row("model directory without tokenizer files", r, "opcd.train: error:", r.wait(),
                    nothing(s / "notok")))
    return rows


CASES = {"checkpoints": checkpoint_cases, "signals": signal_cases, "inputs": input_cases}


def main() -> None:
    from benchmarks.common.machine import environment
    from benchmarks.regions.reliability import footer, table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", choices=list(CASES), help="run these groups only (nothing is written)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "reliability.json"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="opcd-reliability-"))
    t0, load = time.time(), os.getloadavg()[0]  # other work on the machine stretches the times
    rows = []
    try:
        for name in args.only or list(CASES):
            rows += [r.record(scratch) for r in CASES[name](scratch)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"environment": environment(), "load": load, "minutes": (time.time() - t0) / 60, "rows": rows}
    print(table(result))
    if args.only:
        return
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).write_text("# Reliability: faults and bad input\n\n"
                              "Generated by `python docs/reliability.py` from `benchmarks/results/reliability.json` "
                              "(do not edit by hand); the README shows the same table with shortened lines.\n\n"
                              + table(result) + "\n\n" + footer(result) + "\n")
    print(f"wrote {args.json} and {args.out}")


if __name__ == "__main__":
    main()
