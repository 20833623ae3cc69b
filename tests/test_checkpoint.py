"""Checkpoints: atomic writes, picking the newest complete one, refusing a changed config, and
(slow) a SIGKILLed run that resumes and repeats the uninterrupted run's losses."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from opcd.checkpoint import (COMPLETE, complete_checkpoints, config_differences, find_resume_checkpoint,
                             load_state, remove_partial, truncate_jsonl, write_checkpoint)

CFG = {"model": {"path": "m", "dtype": "float32"}, "algo": {"name": "opcd", "lr": 3e-4}, "steps": 10,
       "task": {"seed": 0}, "logger": {"kind": "none"}}


def _write(out, step, keep=2, cfg=CFG, fail=False):
    def write_model(tmp):
        (tmp / "model.safetensors").write_text("weights")
        if fail:
            raise OSError("disk full")

    return write_checkpoint(out, step, {"step": step, "order": [1, 2]}, cfg, write_model, keep)


def test_write_is_atomic_and_keeps_newest(tmp_path):
    for s in (2, 4, 6):
        _write(tmp_path, s)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_4", "step_6"]
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, 8, fail=True)
    # The interrupted write left only a .tmp directory: it is never taken for a checkpoint...
    assert not (tmp_path / "checkpoints" / "step_8").exists()
    assert find_resume_checkpoint("auto", tmp_path).name == "step_6"
    remove_partial(tmp_path)  # ...and the next run deletes it
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_auto_ignores_directories_without_marker(tmp_path):
    assert find_resume_checkpoint("auto", tmp_path) is None  # nothing yet: a fresh start
    assert find_resume_checkpoint("none", tmp_path) is None
    _write(tmp_path, 3)
    fake = tmp_path / "checkpoints" / "step_9"
    fake.mkdir()  # looks like a checkpoint, but was never completed
    assert find_resume_checkpoint("auto", tmp_path).name == "step_3"
    with pytest.raises(FileNotFoundError, match="not a complete opcd checkpoint"):
        find_resume_checkpoint(str(fake), tmp_path)
    assert (find_resume_checkpoint(str(tmp_path / "checkpoints" / "step_3"), tmp_path) / COMPLETE).exists()


def test_changed_config_is_refused_naming_the_keys(tmp_path):
    ckpt = _write(tmp_path, 2)
    assert load_state(ckpt, {**CFG, "steps": 50, "logger": {"kind": "wandb"}})["order"] == [1, 2]  # harmless changes
    changed = {**CFG, "algo": {"name": "opcd", "lr": 1e-3}, "model": {"path": "other", "dtype": "float32"}}
    with pytest.raises(ValueError) as e:
        load_state(ckpt, changed)
    assert "algo.lr: 0.0003 -> 0.001" in str(e.value) and "model.path: 'm' -> 'other'" in str(e.value)
    assert "steps" not in str(e.value).split("differs in")[1].split(".")[0]


def test_config_differences_reports_added_and_removed_keys():
    a = {"algo": {"lr": 1.0}, "rollout": {"n": 1, "threads": 1}}
    b = {"algo": {"lr": 1.0, "new": 2}, "rollout": {"n": 2, "threads": 4}}
    assert config_differences(a, b) == ["algo.new: '<absent>' -> 2", "rollout.n: 1 -> 2"]


def test_truncate_jsonl_drops_rows_after_the_checkpoint(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in range(6)))
    truncate_jsonl(p, 3)
    assert [json.loads(x)["step"] for x in p.read_text().splitlines()] == [0, 1, 2, 3]


# ---------------------------------------------------------------- slow: the real trainer, killed
RUN = ["logger=none", "steps=6", "save_every=2", "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4",
       "task.train_size=12", "rollout.num_workers=1", "keep_checkpoints=5"]


def _cmd(out, *extra):
    return [sys.executable, "-m", "opcd.train", f"hydra.run.dir={out}", *RUN, *extra]


def _rows(out, name="metrics.jsonl"):
    return [json.loads(x) for x in (out / name).read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    r = subprocess.run(_cmd(ref), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    # Kill the driver and everything it started (its own session) once step 2 is checkpointed and
    # step 3 has been logged after it: that step's work is lost and must be redone.
    p = subprocess.Popen(_cmd(crashed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if (crashed / "checkpoints/step_2" / COMPLETE).exists() and (crashed / "metrics.jsonl").exists() \
                and any(row["step"] == 3 for row in _rows(crashed)):
            break
        time.sleep(0.2)
    assert p.poll() is None, "the run ended before it could be killed: " + p.stderr.read()[-3000:]
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = max(row["step"] for row in _rows(crashed))
    assert killed_at < 6
    r = subprocess.run(_cmd(crashed, "resume=auto"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed from" in r.stdout + r.stderr
    a, b = _rows(ref), _rows(crashed)
    assert [row["step"] for row in b] == list(range(7))  # the step count continues, each step logged once
    for ra, rb in zip(a[1:], b[1:]):
        assert rb["loss/total"] == pytest.approx(ra["loss/total"], abs=1e-5), (ra["step"], ra, rb)
    # No prompt skipped or repeated: the data order is the uninterrupted run's; the first epoch
    # (26 prompts: 12 `reverse` + 14 retain) is a permutation and the second repeats nothing.
    order_a = [row["prompts"] for row in _rows(ref, "prompts.jsonl")]
    order_b = [row["prompts"] for row in _rows(crashed, "prompts.jsonl")]
    assert order_a == order_b
    flat = [i for step in order_b for i in step]
    n = max(flat) + 1
    assert n == 26 and sorted(flat[:n]) == list(range(n)) and len(set(flat[n:])) == len(flat[n:])
    # A changed objective is refused, naming the key, before any actor starts.
    r = subprocess.run(_cmd(crashed, "resume=auto", "algo.lr=0.01", "steps=8"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "algo.lr" in r.stderr and "Traceback" not in r.stderr
