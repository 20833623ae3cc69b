"""One run per output folder (opcd.run_dir): the lock, the fresh-run refusal, and moving an old run aside."""
import json
import os
import socket
import subprocess
import sys

import pytest

from opcd import run_dir
from opcd.run_dir import LOCK, RunDirError, acquire, move_aside, prepare, run_contents, start_action


def _lock_of(pid, **extra):
    from opcd.run_dir import _boot_id, _proc_start

    return {"pid": pid, "host": socket.gethostname(), "started": "2025-01-01 00:00:00", "boot_id": _boot_id(),
            "proc_start": _proc_start(pid), "token": "other", **extra}


# ------------------------------------------------------------------------------------------ lock
def test_a_live_holder_is_refused_naming_its_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps(_lock_of(holder.pid)))
        with pytest.raises(RunDirError) as e:
            acquire(tmp_path)
        msg = str(e.value)
        assert f"in use by another opcd run (pid {holder.pid} on {socket.gethostname()}" in msg
        assert f"kill {holder.pid}" in msg and "hydra.run.dir=<new folder>" in msg and "\n" not in msg
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == holder.pid  # left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_second_acquire_in_a_locked_folder_is_refused(tmp_path):
    with acquire(tmp_path):
        with pytest.raises(RunDirError, match=f"pid {os.getpid()} "):
            acquire(tmp_path)
    assert not (tmp_path / LOCK).exists()  # released on exit
    acquire(tmp_path).release()


def test_a_dead_holders_lock_is_taken_over_in_one_line(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps(_lock_of(dead.pid, proc_start="1")))
    lines = []
    lock = acquire(tmp_path, report=lines.append)
    assert lines == [f"[opcd] taking over the lock of {tmp_path}: its holder (pid {dead.pid} on "
                     f"{socket.gethostname()}, started 2025-01-01 00:00:00) is no longer running"]
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_reused_pid_or_a_reboot_does_not_count_as_the_holder(tmp_path):
    lines = []
    # Our own pid, but another process start time: the killed run's pid was reused (e.g. in a container).
    (tmp_path / LOCK).write_text(json.dumps(_lock_of(os.getpid(), proc_start="1")))
    acquire(tmp_path, report=lines.append).release()
    (tmp_path / LOCK).write_text(json.dumps(_lock_of(os.getpid(), boot_id="another-boot")))
    acquire(tmp_path, report=lines.append).release()
    assert len(lines) == 2 and all("no longer running" in line for line in lines)


def test_a_lock_from_another_host_is_refused_with_the_way_out(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps(_lock_of(1, host="elsewhere")))
    with pytest.raises(RunDirError, match=f"pid 1 on elsewhere.*if it is gone, delete {tmp_path / LOCK}"):
        acquire(tmp_path)


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = acquire(tmp_path)
    (tmp_path / LOCK).write_text(json.dumps(_lock_of(os.getpid())))  # taken over meanwhile
    lock.release()
    assert (tmp_path / LOCK).exists()


def test_an_unreadable_lock_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text("{garbage")
    lines = []
    acquire(tmp_path, report=lines.append).release()
    assert lines == [f"[opcd] taking over the unreadable lock file {tmp_path / LOCK}"]


# ------------------------------------------------------------------------------ fresh-run rule
RUN = ["checkpoints/ (step_3)", "metrics.jsonl"]


@pytest.mark.parametrize("contents,has_ckpt,resume,here,overwrite,action", [
    ([], False, "none", False, False, "start"),            # empty folder
    ([], False, "auto", False, False, "start"),
    (RUN, True, "none", False, False, "refuse"),           # the case: a new run over an old one
    (RUN, True, "none", False, True, "move_aside"),        # ... unless overwrite=true
    (RUN, True, "auto", False, False, "start"),            # continuing the run
    (RUN, True, "/x/step_3", True, False, "start"),        # one of its own checkpoints
    (["metrics.jsonl"], False, "auto", False, False, "move_aside"),  # killed before its first checkpoint
    (RUN, True, "/elsewhere/step_3", False, False, "refuse"),  # another run's checkpoint into this folder
    (RUN, True, "/elsewhere/step_3", False, True, "move_aside"),
    (RUN, True, "auto", False, True, "refuse"),            # contradictory
    ([], False, "auto", False, True, "refuse"),
    (RUN, True, "/x/step_3", True, True, "refuse"),
])
def test_start_action(contents, has_ckpt, resume, here, overwrite, action):
    got, msg = start_action(contents, has_ckpt, resume, here, overwrite, "/out")
    assert got == action and "\n" not in msg


def test_refusal_offers_two_safe_ways_out():
    _, msg = start_action(RUN, True, "none", False, False, "/out")
    assert msg == ("/out already holds a run (checkpoints/ (step_3); metrics.jsonl); to continue it pass resume=auto; "
                   "to start a new run use another folder (hydra.run.dir=<new folder>) or overwrite=true (the old "
                   "run is moved to /out/previous-<time>/, nothing is deleted)")


def _old_run(out):
    ck = out / "checkpoints" / "step_3"
    ck.mkdir(parents=True)
    (ck / "COMPLETE").write_text("3")
    (ck / "model.safetensors").write_text("weights")
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    (out / "prompts.jsonl").write_text('{"step": 1}\n')
    (out / "wandb").mkdir()
    (out / "final_metrics.json").write_text("{}")
    (out / ".hydra").mkdir()
    (out / ".hydra" / "config.yaml").write_text("new run's config")
    (out / "train.log").write_text("old log\n")


def test_overwrite_moves_the_old_run_aside_and_deletes_nothing(tmp_path):
    _old_run(tmp_path)
    with pytest.raises(RunDirError, match="already holds a run"):
        prepare(tmp_path, "none", False)
    assert run_contents(tmp_path)  # the refusal touched nothing
    lines = []
    with acquire(tmp_path, report=lines.append):
        prepare(tmp_path, "none", True, report=lines.append)
        assert (tmp_path / LOCK).exists()  # the lock stays in place
    prev = list(tmp_path.glob("previous-*"))
    assert len(prev) == 1 and lines == [f"[opcd] overwrite=true: moved the earlier run (checkpoints/ (step_3); "
                                        f"metrics.jsonl; prompts.jsonl) to {prev[0]}; starting a new run at step 0"]
    p = prev[0]
    assert (p / "checkpoints/step_3/model.safetensors").read_text() == "weights"
    assert (p / "metrics.jsonl").exists() and (p / "prompts.jsonl").exists() and (p / "wandb").is_dir()
    assert (p / "final_metrics.json").exists() and (p / "train.log").read_text() == "old log\n"
    assert (tmp_path / "train.log").read_text() == ""  # this run's log starts empty (its handler is open)
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == "new run's config"
    assert run_contents(tmp_path) == []
    prepare(tmp_path, "none", False)  # the folder now takes a new run; a second move-aside gets its own folder
    _old_run_again = tmp_path / "metrics.jsonl"
    _old_run_again.write_text("x\n")
    assert move_aside(tmp_path) != p and len(list(tmp_path.glob("previous-*"))) == 2


def test_resume_auto_without_checkpoint_moves_the_early_logs_aside(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
    lines = []
    prepare(tmp_path, "auto", False, report=lines.append)
    assert lines and "resume=auto: no checkpoint to resume from yet" in lines[0]
    assert not (tmp_path / "metrics.jsonl").exists() and len(list(tmp_path.glob("previous-*/metrics.jsonl"))) == 1


def test_resume_auto_with_a_checkpoint_keeps_everything(tmp_path):
    _old_run(tmp_path)
    prepare(tmp_path, "auto", False)
    prepare(tmp_path, str(tmp_path / "checkpoints" / "step_3"), False)
    assert not list(tmp_path.glob("previous-*")) and (tmp_path / "metrics.jsonl").exists()


def test_run_contents_ignores_hydra_files_and_empty_checkpoint_folder(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "train.log").write_text("")
    assert run_contents(tmp_path) == []
    assert run_dir.has_checkpoint(tmp_path) is False


# ------------------------------------------------------------------------------ slow: real runs
@pytest.mark.slow
def test_a_second_run_is_refused_at_once_and_ctrl_c_stops_the_first_in_one_line(tmp_path):
    """Two runs in one folder used to both exit 0, two metrics rows per step, one tearing the other's
    checkpoints. Now the second is refused naming the first's pid; then Ctrl-C (SIGINT to the whole
    process group, as a terminal sends it) stops the first with one line naming its checkpoint."""
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "opcd.train", f"hydra.run.dir={out}", "logger=none", "steps=40", "save_every=1",
            "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4", "task.train_size=12",
            "rollout.num_workers=1"]
    log = open(tmp_path / "first.stderr", "w")  # a file, not a pipe: a full pipe would stall the run
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / LOCK).exists():
            time.sleep(0.2)
        assert json.loads((out / LOCK).read_text())["pid"] == first.pid
        t0 = time.time()
        second = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert f"opcd.train: error: {out} is in use by another opcd run (pid {first.pid} " in second.stderr
        assert time.time() - t0 < 60  # start-up only: nothing was trained
        while time.time() < deadline and not (out / "checkpoints" / "step_2" / "COMPLETE").exists():
            assert first.poll() is None, (tmp_path / "first.stderr").read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGINT)
        rc = first.wait(timeout=180)
    finally:
        log.close()
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    err = (tmp_path / "first.stderr").read_text()
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"opcd.train: stopped by Ctrl-C; resume from {out}/checkpoints/step_"), last
    assert last.endswith(f"resume=auto hydra.run.dir={out}") and "logger=none" in last
    assert not (out / LOCK).exists()  # released on the way out
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(len(steps)))  # one writer: one row per step
