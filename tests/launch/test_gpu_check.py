"""launch/gpu_check.sh: the path list, the line format, the no-CUDA run, and the checks' own logic.

The CUDA checks themselves run only on a GPU machine; here they run as the script's CPU self-test
(``--device cpu``: the same code with gloo instead of NCCL and no CUDA-memory measurement), in
process for the pure tensor checks and (slow) in the script's own child processes for DeepSpeed
and torch.distributed.
"""
import importlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
NAMES = ["zero2_bf16_step", "zero3_bf16_step", "gradient_checkpointing", "teacher_scoring", "chunked_kl",
         "hidden_state_kl", "nccl_group", "nccl_bucket_broadcast", "vllm_engine", "ray_placement"]
RESULT = re.compile(r"^(PASS|FAIL|SKIPPED) ([a-z0-9_]+): (\S.*)$")


@pytest.fixture
def gc(monkeypatch):
    """The launch/gpu_check*.py modules (launch/ is not a package: its folder goes on sys.path)."""
    monkeypatch.syspath_prepend(str(LAUNCH))
    mods = {m: importlib.import_module(m) for m in ("gpu_check", "gpu_check_paths", "gpu_check_losses", "gpu_check_comm")}
    return type("GC", (), {"run": mods["gpu_check"], "paths": mods["gpu_check_paths"], "losses": mods["gpu_check_losses"],
                           "comm": mods["gpu_check_comm"]})


@pytest.fixture
def ctx(gc, tmp_path):
    torch.set_num_threads(1)
    return gc.paths.Ctx(device="cpu", tmp=tmp_path)


def _script(*args, env=None, timeout=120):
    e = {**os.environ, **(env or {})}
    return subprocess.run(["bash", str(LAUNCH / "gpu_check.sh"), *args], capture_output=True, text=True, env=e,
                          timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------------------------------- the script
def test_dry_run_lists_every_path_without_importing_torch(tmp_path):
    fake = tmp_path / "torch"  # first on PYTHONPATH: importing torch at all fails the dry run
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('a dry run must not import torch')\n")
    r = _script("--dry-run", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [re.match(r"^DRY ([a-z0-9_]+): \S.*$", x).group(1) for x in lines] == NAMES


def test_only_and_out(tmp_path):
    out = tmp_path / "sub" / "gpu_check.txt"
    r = _script("--dry-run", "--only", "nccl_group", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == out.read_text().splitlines()
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith("DRY nccl_group: ")
    bad = _script("--dry-run", "--only", "no_such_path")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "chunked_kl" in bad.stderr


def test_without_cuda_every_path_is_skipped_quickly(tmp_path):
    out = tmp_path / "gpu_check.txt"
    t0 = time.monotonic()
    r = _script("--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert time.monotonic() - t0 < 60
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines == out.read_text().splitlines()
    assert lines[0].startswith("# gpu_check: device none")
    results = [RESULT.match(x).groups() for x in lines[1:-1]]
    assert [n for _, n, _ in results] == NAMES
    assert all(s == "SKIPPED" and d == "no CUDA device" for s, _, d in results)
    assert re.fullmatch(r"SUMMARY: 0 PASS, 0 FAIL, 10 SKIPPED in \d+ s", lines[-1])


# ------------------------------------------------------------------------------- the runner's logic
def test_every_path_names_a_function(gc):
    assert [p.name for p in gc.run.PATHS] == NAMES
    for p in gc.run.PATHS:
        assert callable(getattr(importlib.import_module(p.module), p.name)), p.name
    # no path starts after BUDGET_S and none runs past it: the run fits in 8 minutes with start-up
    assert gc.run.BUDGET_S <= 8 * 60 - 20 and all(p.timeout_s <= gc.run.BUDGET_S for p in gc.run.PATHS)


def test_child_results_summary_and_exit_code(gc):
    R = gc.run.Result
    ok = gc.run.parse_child("a", f"noise\n{gc.run.MARK}" + '{"status": "PASS", "detail": "fine\\nreally"}\n', 0)
    assert ok == R("PASS", "a", "fine\nreally") and ok.line() == "PASS a: fine really"
    died = gc.run.parse_child("b", "Traceback ...\nSegmentation fault\n", -11)
    assert died.status == "FAIL" and "status -11" in died.detail and "Segmentation fault" in died.detail
    results = [ok, R("SKIPPED", "c", "why"), died]
    assert gc.run.summary(results, 12.3) == "SUMMARY: 1 PASS, 1 FAIL, 1 SKIPPED in 12 s"
    assert gc.run.exit_code(results) == 1 and gc.run.exit_code(results[:2]) == 0
    late = gc.run.run_path(gc.run.BY_NAME["chunked_kl"], "cuda", seconds_left=gc.run.MIN_START_S - 1)
    assert late.status == "FAIL" and "budget" in late.detail  # not started: nothing ran


# ----------------------------------------------------------------------- the checks, as CPU self-test
def test_tensor_checks_pass_on_cpu(ctx, gc):
    assert "forwards 2 -> 4" in gc.paths.gradient_checkpointing(ctx)
    assert "= full_reverse_kl" in gc.losses.chunked_kl(ctx)
    assert "topk/student_topk/full" in gc.paths.teacher_scoring(ctx)
    try:  # whatever this checkout's opcd.chunked_kl holds (the fakes below test the check itself)
        assert "= full-vocabulary" in gc.losses.hidden_state_kl(ctx)
    except gc.paths.Skip as e:
        assert "not implemented in this checkout" in str(e)


def _make(per_position: float, base: float = 2**27):
    """A fake loss closure factory whose measured peak is base + per_position * positions."""
    def at(T):
        run = lambda: None  # noqa: E731
        run.peak = int(base + per_position * 2 * T)
        return run
    return at


def test_flat_memory_decision(gc, monkeypatch):
    p = gc.losses
    monkeypatch.setattr(p, "_peak_extra_bytes", lambda run: run.peak)
    V = p.MEM_V
    assert "B/position" in p._flat_memory(_make(12 * p.MEM_H), _make(5 * 4 * V))
    with pytest.raises(AssertionError, match="not flat"):
        p._flat_memory(_make(4 * V), _make(5 * 4 * V))  # a [N, V] float32 tensor kept alive
    with pytest.raises(AssertionError, match="blind"):
        p._flat_memory(_make(0), _make(0))


def _hidden_kl(respect_temperature=True):
    """A stand-in for chunked_reverse_kl_from_hidden built on chunked_full_reverse_kl's lazy teacher."""
    from opcd.losses import chunked_full_reverse_kl

    def fn(student_hidden, student_head, teacher_hidden, teacher_head, mask, temperature=1.0, chunk_size=1024,
           aggregation="token_mean"):
        flat = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
        tau = temperature if respect_temperature else 1.0
        teacher = lambda rows: torch.log_softmax(flat[rows] @ teacher_head.t() / tau, -1)  # noqa: E731
        return chunked_full_reverse_kl(student_hidden, student_head, teacher, mask, temperature, chunk_size, aggregation)
    return fn


def test_hidden_state_check(ctx, gc, monkeypatch):
    import opcd.chunked_kl

    monkeypatch.delattr(opcd.chunked_kl, "chunked_reverse_kl_from_hidden", raising=False)
    with pytest.raises(gc.paths.Skip, match="not implemented in this checkout"):
        gc.losses.hidden_state_kl(ctx)
    monkeypatch.setattr(opcd.chunked_kl, "chunked_reverse_kl_from_hidden", _hidden_kl(), raising=False)
    assert "= full-vocabulary" in gc.losses.hidden_state_kl(ctx)
    monkeypatch.setattr(opcd.chunked_kl, "chunked_reverse_kl_from_hidden", _hidden_kl(False), raising=False)
    with pytest.raises(AssertionError, match="full-vocabulary"):
        gc.losses.hidden_state_kl(ctx)
    monkeypatch.setattr(opcd.chunked_kl, "chunked_reverse_kl_from_hidden", lambda hidden, *, head: None, raising=False)
    with pytest.raises(TypeError, match="signature"):
        gc.losses.hidden_state_kl(ctx)


def test_vllm_and_ray_paths_skip_when_not_installed(ctx, gc, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m in ("vllm", "ray") else real(m, *a))
    for fn in (gc.comm.vllm_engine, gc.comm.ray_placement):
        with pytest.raises(gc.paths.Skip, match="^vllm/ray not installed on this machine"):
            fn(ctx)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero3_bf16_step", "nccl_group", "nccl_bucket_broadcast"])
def test_self_test_on_cpu(name):
    """DeepSpeed (LearnerActor, ZeRO-3, bf16) and torch.distributed paths, in the script's own child
    process, on CPU with gloo."""
    r = _script("--device", "cpu", "--only", name, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert RESULT.match(r.stdout.splitlines()[1]).groups()[:2] == ("PASS", name)
