"""`python -m opcd.experience`: one-line errors, and (slow) the real pipeline on the shipped toy model."""
import json
import subprocess
import sys

import pytest

from opcd import config as C
from opcd.tasks import load_task
from opcd.tasks.experience_context import EXPERIENCE_KIND, read_experience_file


def _cli(*overrides):
    return subprocess.run([sys.executable, "-m", "opcd.experience", *overrides], capture_output=True, text=True,
                          timeout=300)


def test_cli_bad_extractor_is_one_line_error(tmp_path):
    r = _cli("extractor=summary", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode != 0 and "unknown extractor 'summary'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_builds_experience_on_toy_model(tmp_path):
    out, rep = tmp_path / "exp.txt", tmp_path / "report.json"
    r = _cli("n_problems=8", "candidates=2", "n_validation=16", f"out={out}", f"report={rep}",
             f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(rep.read_text())
    cands = report["candidates"]
    assert len(cands) == 2 and all(c["accuracy"] is not None and c["tokens"] <= 64 for c in cands)
    assert report["chosen_accuracy"] == max(c["accuracy"] for c in cands)
    text = read_experience_file(str(out))
    assert text == report["experience"] == cands[report["chosen"]]["text"]
    lines = text.splitlines()
    assert lines[0] == "Examples:" and 2 <= len(lines) - 1 <= 5
    assert all(y == x[::-1] for x, y in (ln.split(" -> ") for ln in lines[1:]))  # correct reverse demos
    # The shipped model cannot reverse without context; its own demonstrations let it.
    assert report["no_context_accuracy"] <= 0.25 and report["chosen_accuracy"] >= 0.5
    data = load_task(C.ToyRulesTaskConfig(train_size=4, retain_ratio=0.0, eval_n_per_rule=2, experience_file=str(out)))
    assert all(rec["context"] == text for rec in data.train)
    assert {r["context"] for r in data.eval if r["metadata"]["context_kind"] == EXPERIENCE_KIND} == {text}
