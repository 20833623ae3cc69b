"""`python -m opcd.train` refuses bad input at start-up, before any actor starts, with a clear message."""
import json
import shutil
import subprocess
import sys


def _train(tmp_path, *overrides):
    return subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}/run", "logger=none",
                           *overrides], capture_output=True, text=True, timeout=300)


def test_teacher_tokenizer_mismatch_stops_at_startup(tmp_path, tiny_model_dir):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = "a", "b"
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, different ids: still a mismatch
    (other / "tokenizer.json").write_text(json.dumps(tj))
    r = _train(tmp_path, f"model.path={tiny_model_dir}", f"model.teacher_path={other}")
    assert r.returncode != 0
    assert "tokenizer mismatch" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_config_key_fails_with_hydra_message(tmp_path):
    r = _train(tmp_path, "algo.nca_bta=0.5")
    assert r.returncode != 0 and "nca_bta" in r.stderr


def test_wrong_type_fails(tmp_path):
    r = _train(tmp_path, "steps=many")
    assert r.returncode != 0 and "steps" in r.stderr


def test_unknown_rule_and_missing_model(tmp_path):
    r = _train(tmp_path, "task.distill_rules=[revers]")
    assert r.returncode != 0 and "unknown toy-world rule 'revers'" in r.stderr
    r = _train(tmp_path, f"model.path={tmp_path}/missing")
    assert r.returncode != 0 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_context_too_long_is_refused_with_count(tmp_path):
    r = _train(tmp_path, "model.max_model_len=40")
    assert r.returncode != 0 and "exceed the model's maximum length" in r.stderr and "task.too_long=skip" in r.stderr


def test_zero_loss_temperature_is_refused_at_startup(tmp_path):
    r = _train(tmp_path, "algo.temperature=0")
    assert r.returncode != 0 and "algo.temperature must be > 0" in r.stderr and "Traceback" not in r.stderr


def test_negative_nca_settings_are_refused_at_startup(tmp_path):
    for bad in ("algo.nca_beta=-0.5", "algo.nca_warmup_steps=-1"):
        r = _train(tmp_path, bad)
        assert r.returncode != 0 and "must be >= 0" in r.stderr and "Traceback" not in r.stderr, bad


def test_plus_override_of_an_unknown_key_is_refused(tmp_path):
    """Hydra's own hint for a misspelled key is `+algo.lrr=...`, which bypasses the typed schema."""
    r = _train(tmp_path, "+algo.lrr=1e-3")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "opcd.train: error: unknown config key algo.lrr (did you mean algo.lr?)" in r.stderr


def test_missing_relative_model_path_is_not_taken_for_a_hub_id(tmp_path):
    r = _train(tmp_path, "model.path=models/mine")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "model.path='models/mine' does not exist" in r.stderr and "model.hub=true" in r.stderr


def test_a_new_run_over_an_old_one_is_refused_and_touches_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    r = _train(tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"opcd.train: error: {run} already holds a run (metrics.jsonl); to continue it pass resume=auto" in r.stderr
    assert "overwrite=true" in r.stderr and (run / "metrics.jsonl").read_text() == '{"step": 0}\n'
    assert not (run / ".opcd.lock").exists()  # released on the way out


def test_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    from opcd.run_dir import acquire

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from opcd.run_dir import acquire; "
                               f"acquire({str(tmp_path / 'run')!r}); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = _train(tmp_path)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert f"is in use by another opcd run (pid {holder.pid} " in r.stderr
    finally:
        holder.kill()
        holder.wait()
    acquire(tmp_path / "run").release()  # the dead holder's lock is taken over


def test_eval_of_a_damaged_checkpoint_says_what_is_wrong(tmp_path, tiny_model_dir):
    from opcd.checkpoint import write_checkpoint

    ckpt = write_checkpoint(tmp_path, 3, {"step": 3}, {"model": {}},
                            lambda tmp: shutil.copytree(tiny_model_dir, tmp, dirs_exist_ok=True), keep=0)
    w = ckpt / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    r = subprocess.run([sys.executable, "-m", "opcd.eval", f"model.path={ckpt}", f"hydra.run.dir={tmp_path}/eval"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"opcd.eval: error: model.path={ckpt} is a damaged opcd checkpoint: model.safetensors is truncated (1,000 of" \
        in r.stderr


def test_sigterm_becomes_an_exception_that_runs_finally_blocks_also_after_ray_init():
    import os
    import signal
    import sys
    import time
    import types

    import pytest

    from opcd.train import Stopped, stop_signals, stopped_by

    def ray_like_init():  # what ray.init does to SIGTERM in the driver
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))

    fake_ray = types.SimpleNamespace(init=ray_like_init)
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Stopped) as e:
        with stop_signals(fake_ray) as received:
            fake_ray.init()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this at once
            finally:
                cleaned.append(True)
    assert cleaned == [True] and received == {"how": "SIGTERM"} and stopped_by(e.value, received) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before and fake_ray.init is ray_like_init  # all restored
    assert issubclass(Stopped, KeyboardInterrupt) and not issubclass(Stopped, Exception)


def test_stop_requests_are_told_apart_from_other_exits():
    from opcd.train import stopped_by

    assert stopped_by(KeyboardInterrupt(), {}) == "Ctrl-C"
    assert stopped_by(KeyboardInterrupt(), {"how": "SIGTERM"}) == "SIGTERM"  # as ray.get re-raises it
    assert stopped_by(SystemExit(1), {"how": "SIGTERM"}) == "SIGTERM"
    assert stopped_by(SystemExit("opcd.train: error: x"), {}) is None and stopped_by(SystemExit(0), {}) is None
    assert stopped_by(ValueError(), {"how": "SIGTERM"}) is None


def test_stop_message_names_the_checkpoint_and_the_resume_command(tmp_path):
    from opcd.checkpoint import write_checkpoint
    from opcd.train import resume_command, stop_message

    overrides = ["logger=none", "steps=6", "resume=none", "overwrite=true", "task.context=a b"]
    assert resume_command(tmp_path, overrides) == (f"python -m opcd.train logger=none steps=6 'task.context=a b' "
                                                   f"resume=auto hydra.run.dir={tmp_path}")
    assert stop_message("Ctrl-C", tmp_path, overrides) == (
        "opcd.train: stopped by Ctrl-C before any intact checkpoint; "
        f"`{resume_command(tmp_path, overrides)}` starts it again from step 0")
    for step in (2, 4):
        write_checkpoint(tmp_path, step, {"step": step}, {}, lambda tmp: (tmp / "w").write_text("w"), keep=0)
    (tmp_path / "checkpoints" / "step_4" / "w").write_text("")  # damaged: not offered
    assert stop_message("SIGTERM", tmp_path, overrides) == (
        f"opcd.train: stopped by SIGTERM; resume from {tmp_path}/checkpoints/step_2 with: "
        f"{resume_command(tmp_path, overrides)}")
