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
