"""Running a benchmark job (opcd training, an evaluator, the TRL worker) as a timed subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped)."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def run_process(cmd: list[str], log_path: Path, watch: Path | None = None, timeout: float | None = None) -> dict:
    """Run ``cmd`` from the repository root (stdout and stderr to ``log_path``); when ``watch`` is a
    JSONL file the process appends to, stamp each new row's ``step`` with the wall time it appeared.

    Returns ``{"cmd", "t_start", "t_end", "step_stamps": {step (str): time}}``, times in epoch seconds.
    Raises ``RuntimeError`` (with the log's tail) on a non-zero exit, ``TimeoutError`` past ``timeout`` s.
    """
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    seen, stamps = 0, {}

    def poll():
        nonlocal seen
        if watch is None or not watch.exists():
            return
        lines = watch.read_text().split("\n")[:-1]  # complete lines only
        for line in lines[seen:]:
            stamps[str(json.loads(line)["step"])] = time.time()
        seen = len(lines)

    t0 = time.time()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            while p.poll() is None:
                time.sleep(0.25)
                poll()
                if timeout and time.time() - t0 > timeout:
                    p.kill()
                    raise TimeoutError(f"{cmd[:4]} ran past {timeout:.0f} s; see {log_path}")
        except BaseException:
            if p.poll() is None:
                p.kill()
            raise
    poll()
    t1 = time.time()
    if p.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed (exit {p.returncode}); log {log_path}:\n{tail}")
    return {"cmd": cmd, "t_start": t0, "t_end": t1, "step_stamps": stamps}
