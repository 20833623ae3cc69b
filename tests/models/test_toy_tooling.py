"""The toy model's tooling (opcd.models.toy): where it writes, its CLIs, and no pretrain <-> model_card cycle."""
import subprocess
import sys
from pathlib import Path

from opcd import config as C
from opcd.models.toy import DEFAULT_OUT

ROOT = Path(__file__).resolve().parents[2]


def _py(code_or_args, timeout=180):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_default_out_is_the_shipped_model_that_model_path_names():
    assert DEFAULT_OUT == C.ASSETS / "toy-model" and (DEFAULT_OUT / "config.json").is_file()
    assert "${opcd_asset:toy-model}" in (ROOT / "conf" / "model" / "toy.yaml").read_text()


def test_pretrain_cli_answers_help():
    r = _py(["-m", "opcd.models.toy.pretrain", "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--out" in r.stdout and "--skip-card" in r.stdout and "python -m opcd.models.toy.pretrain" in r.stdout


def test_model_card_does_not_import_pretrain():
    # model_card and pretrain used to import each other (DEFAULT_OUT); the path now lives in the package
    r = _py("import sys, opcd.models.toy.model_card as m; assert 'opcd.models.toy.pretrain' not in sys.modules; "
            "print(m.eval_config('x').model.path)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "x"
