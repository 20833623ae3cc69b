"""`python -m opcd.eval` turns bad input into a one-line error (no traceback)."""
import subprocess
import sys

import pytest


def _run(*overrides, cwd=None):
    return subprocess.run([sys.executable, "-m", "opcd.eval", *overrides], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_wrong_path_is_one_line_error(tmp_path):
    r = _run(f"model.path={tmp_path}/nope", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode != 0
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_split_is_one_line_error(tmp_path):
    r = _run("split=dev", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode != 0 and "unknown split 'dev'" in r.stderr and "Traceback" not in r.stderr


def test_model_without_chat_template(tmp_path, tiny_model_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    import json

    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    r = _run(f"model.path={d}", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode != 0 and "chat template" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_key_fails_with_hydra_message(tmp_path):
    r = _run("n_per_rul=3", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode != 0 and "n_per_rul" in r.stderr


@pytest.mark.slow
def test_cli_evaluates_and_writes_json(tmp_path, tiny_model_dir):
    import json

    out = tmp_path / "e.json"
    r = _run(f"model.path={tiny_model_dir}", "n_per_rule=3", f"out={out}", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr[-2000:]
    table = json.loads(out.read_text())["accuracy"]
    assert set(table["mean"]) == {"system", "demos", "none"} and "reverse" in table
    assert "no context" in r.stdout and "reverse" in r.stdout


def test_unknown_context_kind_is_one_line_error(tmp_path):
    r = _run("context_kinds=[bogus]", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode != 0 and "unknown context kind 'bogus'" in r.stderr and "Traceback" not in r.stderr
