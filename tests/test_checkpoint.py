"""Checkpoints: atomic writes, manifests that catch a damaged checkpoint, falling back to the newest
intact one, pruning that never deletes another run's checkpoints, refusing a changed config, and
(slow) a SIGKILLed run that resumes and repeats the uninterrupted run's losses, and a run whose newest
checkpoint was truncated that resumes from the one before."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from opcd.checkpoint import (COMPLETE, MANIFEST, CheckpointError, complete_checkpoints, config_differences,
                             find_resume_checkpoint, load_state, remove_partial, run_id_of, truncate_jsonl,
                             verify_checkpoint, write_checkpoint)

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


# ---------------------------------------------------------------- verification (manifest)
def _model_writer(tmp):
    (tmp / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (tmp / "deepspeed").mkdir()
    (tmp / "deepspeed" / "mp_rank_00_model_states.pt").write_bytes(b"m" * 3000)
    (tmp / "deepspeed" / "optim_states.pt").write_bytes(b"o" * 5000)


def _full(out, step, keep=0):
    return write_checkpoint(out, step, {"step": step, "order": []}, CFG, _model_writer, keep)


def test_intact_checkpoint_verifies_and_lists_every_file(tmp_path):
    ckpt = _full(tmp_path, 2)
    assert verify_checkpoint(ckpt) is None and verify_checkpoint(ckpt, checksums=False) is None
    listed = json.loads((ckpt / MANIFEST).read_text())
    assert set(listed["files"]) == {"model.safetensors", "deepspeed/mp_rank_00_model_states.pt",
                                    "deepspeed/optim_states.pt", "trainer_state.json", "config.yaml"}
    assert listed["step"] == 2 and listed["run"]
    assert listed["files"]["model.safetensors"]["size"] == 10240


def test_truncated_file_is_named_with_its_sizes(tmp_path):
    ckpt = _full(tmp_path, 2)
    w = ckpt / "model.safetensors"
    w.write_bytes(w.read_bytes()[:5120])
    assert verify_checkpoint(ckpt) == "model.safetensors is truncated (5,120 of 10,240 bytes)"
    assert verify_checkpoint(ckpt, checksums=False) == "model.safetensors is truncated (5,120 of 10,240 bytes)"


def test_deleted_folder_is_named_once(tmp_path):
    ckpt = _full(tmp_path, 2)
    shutil.rmtree(ckpt / "deepspeed")
    assert verify_checkpoint(ckpt) == "deepspeed/ is missing (2 files)"
    assert verify_checkpoint(ckpt, model_only=True) is None  # loading the HF model does not need it
    (ckpt / "config.yaml").unlink()
    assert verify_checkpoint(ckpt) == "config.yaml is missing (and 1 more damaged file)"


def test_flipped_bytes_fail_the_checksum_only(tmp_path):
    ckpt = _full(tmp_path, 2)
    p = ckpt / "deepspeed" / "optim_states.pt"
    data = bytearray(p.read_bytes())
    data[1234] ^= 0xFF
    p.write_bytes(bytes(data))
    assert verify_checkpoint(ckpt, checksums=False) is None  # same size: only the checksum can tell
    assert verify_checkpoint(ckpt) == "deepspeed/optim_states.pt is corrupted (same size, different SHA-256 than when written)"


def test_missing_or_broken_manifest_and_marker(tmp_path):
    ckpt = _full(tmp_path, 2)
    (ckpt / MANIFEST).write_text("{not json")
    assert verify_checkpoint(ckpt).startswith(f"{MANIFEST} is unreadable")
    (ckpt / MANIFEST).unlink()
    assert verify_checkpoint(ckpt).startswith(f"no {MANIFEST}")
    (ckpt / COMPLETE).unlink()
    assert verify_checkpoint(ckpt) == "no COMPLETE marker (its write was interrupted)"
    assert verify_checkpoint(tmp_path / "nope") == "it does not exist"


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    for s in (2, 4, 6):
        _full(tmp_path, s)
    root = tmp_path / "checkpoints"
    (root / "step_6" / "model.safetensors").write_bytes(b"half")
    assert find_resume_checkpoint("auto", tmp_path) == root / "step_4"
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"[opcd] skipping damaged checkpoint {root / 'step_6'}: model.safetensors is truncated (4 of 10,240 bytes)"]
    shutil.rmtree(root / "step_4" / "deepspeed")  # two damaged: both named, the oldest intact one wins
    assert find_resume_checkpoint("auto", tmp_path) == root / "step_2"
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    (root / "step_2" / "trainer_state.json").write_text("{}")  # none intact: one line, no fallback to nothing
    with pytest.raises(CheckpointError) as e:
        find_resume_checkpoint("auto", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "none of the 3 checkpoint(s)" in msg and "step_6: model.safetensors is truncated" in msg
    assert "overwrite=true" in msg
    with pytest.raises(CheckpointError, match="damaged checkpoint: deepspeed/ is missing"):  # an explicit one too
        find_resume_checkpoint(str(root / "step_4"), tmp_path)


def test_changed_config_advice_does_not_suggest_resume_none_alone(tmp_path):
    ckpt = _full(tmp_path, 2)
    with pytest.raises(ValueError) as e:
        load_state(ckpt, {**CFG, "algo": {"name": "opcd", "lr": 1e-3}})
    msg = str(e.value)
    assert "hydra.run.dir=<new folder>" in msg and "resume=none overwrite=true" in msg


# ---------------------------------------------------------------- pruning never touches another run
def test_pruning_keeps_the_writing_runs_checkpoints_whatever_the_step(tmp_path, capsys):
    """The issue's case: an old run left step_6 and step_9; a new run in the folder writes step_3 (keep=2).
    Pruning by step number alone deleted step_3 as soon as it was written."""
    for s in (3, 6, 9):
        _full(tmp_path, s, keep=2)
    root = tmp_path / "checkpoints"
    old_run = run_id_of(root / "step_9")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_6", "step_9"]
    find_resume_checkpoint("none", tmp_path)  # a fresh start: a new run id
    for s in (3, 4, 5):
        _full(tmp_path, s, keep=2)
        assert (root / f"step_{s}").exists()  # never deleted as it is written
    names = {p.name for p in complete_checkpoints(tmp_path)}
    assert names == {"step_4", "step_5", "step_6", "step_9"}  # own older step_3 pruned; the old run untouched
    assert run_id_of(root / "step_9") == old_run != run_id_of(root / "step_5")
    # Reaching a step the other run also has: the other run's checkpoint is moved aside, not deleted.
    _full(tmp_path, 6, keep=2)
    moved = list(root.glob(f"step_6.other-run-{old_run}-*"))
    assert len(moved) == 1 and verify_checkpoint(moved[0]) is None
    assert "belonged to another run" in capsys.readouterr().out
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_5", "step_6", "step_9"]


def test_a_resumed_run_continues_its_run_id_and_prunes_its_own_older_steps(tmp_path):
    for s in (2, 4):
        _full(tmp_path, s, keep=2)
    run = run_id_of(tmp_path / "checkpoints" / "step_4")
    find_resume_checkpoint("none", tmp_path)  # another process's fresh run in between...
    find_resume_checkpoint("auto", tmp_path)  # ...then resuming step_4: its id again
    _full(tmp_path, 6, keep=2)
    assert run_id_of(tmp_path / "checkpoints" / "step_6") == run
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_4", "step_6"]


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


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    """Cut the newest checkpoint's weights in half: resume=auto says so in one line and resumes from the
    checkpoint before it (it used to resume silently from the broken one)."""
    out = tmp_path / "run"
    r = subprocess.run(_cmd(out, "steps=4"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    root = out / "checkpoints"
    assert [p.name for p in complete_checkpoints(out)] == ["step_2", "step_4"]
    w = root / "step_4" / "model.safetensors"
    size = w.stat().st_size
    w.write_bytes(w.read_bytes()[: size // 2])
    r = subprocess.run(_cmd(out, "steps=4", "resume=auto"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    said = [line for line in (r.stdout + r.stderr).splitlines() if "damaged" in line]
    assert said == [f"[opcd] skipping damaged checkpoint {root / 'step_4'}: model.safetensors is truncated "
                    f"({size // 2:,} of {size:,} bytes)"]
    assert f"resumed from {root / 'step_2'} at step 2" in r.stdout + r.stderr
    assert [row["step"] for row in _rows(out)] == [0, 1, 2, 3, 4]  # steps 3-4 redone, each logged once
    assert verify_checkpoint(root / "step_4") is None  # rewritten, intact, by the resumed run
