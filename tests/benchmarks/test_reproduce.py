"""benchmarks/reproduce.py: the report from synthetic sweep output (fast), targets checked as stated."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rep():
    from benchmarks import reproduce

    return reproduce


def _rows(acc_x, acc_c, harm, ood):
    return [{"step": 0, "eval/distilled/none": 0.0, "eval/distilled/system": 1.0, "time/elapsed_s": 1.0},
            {"step": 1, "loss/total": 0.5, "time/elapsed_s": 2.0},
            {"step": 2, "eval/distilled/none": acc_x, "eval/distilled/system": acc_c,
             "eval/distilled/harm_system": harm, "eval/other/system": ood, "time/elapsed_s": 120.0}]


def _sweep(tmp_path, runs):
    for algo, rows in runs.items():
        (tmp_path / algo).mkdir()
        (tmp_path / algo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_report_from_a_sweep_directory(rep, tmp_path):
    d = tmp_path / "sweep"
    d.mkdir()
    _sweep(d, {"icl": [{"step": 0, "eval/distilled/none": 0.02, "eval/distilled/system": 1.0}],
               "opcd": _rows(0.9, 0.95, 0.10, 0.7), "opcd_nca": _rows(0.88, 1.0, 0.02, 0.75),
               "offpolicy_cd": _rows(0.6, 0.9, 0.2, 0.5)})
    out = tmp_path / "report"
    assert rep.main(["--from-dir", str(d), "--name", "t", "--out-dir", str(out), "--notes", "a finding"]) == 0
    md = (out / "reproduction_t.md").read_text()
    assert "| `opcd` | 0.900 | 0.950 | 0.100 |" in md and "a finding" in md
    assert md.startswith("<!-- rendered: reproduction t -->\n# Reproduction report")
    # Every point value clears its target, but at the inferred prompt counts (50 and 20) only the
    # widest gap clears its interval: the intervals decide (the rule of benchmarks/README.md).
    assert md.count("- **within noise**: ") == 3 and "- **met**: OPCD Acc_x ≥ off-policy CD Acc_x" in md
    assert "Acc_x 50, Acc_x,c 20, OOD: other behaviours 20." in md and "| `offpolicy_cd` | 0.600 |" in md
    assert (out / "reproduction_t.png").stat().st_size > 1000
    data = json.loads((out / "results" / "reproduction_t.json").read_text())
    assert data["summary"]["opcd"]["wall_s"] == 120.0 and len(data["curves"]["opcd"]) == 3


def test_restated_targets_follow_the_intervals(rep):
    """Enough prompts for the differences to clear: met, missed and within noise from the same rule."""
    def rates(n, **per_algo):
        return {"experiment": "x", "summary": {a: {"eval/distilled/none": v[0], "eval/distilled/system": v[1],
                                                    "eval/distilled/harm_system": v[2], "eval/other/system": v[3],
                                                    "steps": 1, "wall_s": None} for a, v in per_algo.items()}}
    data = rates(400, icl=(0.0025, 1.0, None, 0.9975), opcd=(0.9, 0.95, 0.1, 0.9),
                 offpolicy_cd=(0.5, 0.9, 0.2, 0.9025), opcd_nca=(0.9, 1.0, 0.3, 0.9))
    got = {c.benchmark: c.verdict.status for c in rep.checks(data)}
    assert got == {"OPCD Acc_x ≥ off-policy CD Acc_x": "met",
                   "OPCD Acc_x ≥ 80% of the ICL teacher's accuracy": "met",
                   "OPCD OOD accuracy (other behaviours, with their contexts) ≥ off-policy CD's": "within noise",
                   "opcd_nca Harm < opcd Harm": "missed"}
    del data["summary"]["icl"]
    assert len(rep.checks(data)) == 3  # a missing method: its target is left out, not guessed


def test_targets_report_misses_and_missing_methods(rep):
    s = rep.summarise({"opcd": _rows(0.5, 0.9, 0.3, 0.4), "offpolicy_cd": _rows(0.6, 0.9, 0.2, 0.5),
                       "opcd_nca": _rows(0.5, 0.9, 0.4, 0.4)})
    checks = {t: ok for t, ok, _ in rep.check_targets(s)}
    assert checks["OPCD Acc_x ≥ off-policy CD Acc_x"] is False
    assert checks["OPCD Acc_x ≥ 80% of the ICL teacher's accuracy"] is None  # no icl run
    assert checks["opcd_nca Harm < opcd Harm"] is False


def test_every_method_keeps_its_own_loss_whatever_the_preset_sets(rep, tmp_path, monkeypatch):
    assert [rep.own_loss(a) for a in rep.ALGOS] == ["topk_reverse_kl", "topk_reverse_kl", "topk_reverse_kl",
                                                    "forward_kl", "nll", "jsd"]
    cmds = []
    monkeypatch.setattr(rep.subprocess, "run", lambda cmd, **kw: cmds.append(cmd))
    rep.run_sweep("smollm2_french", ["opcd", "sft"], 3, 0, tmp_path, ["task.eval_n_per_rule=4"])
    assert [c[4:7] for c in cmds] == [
        ["experiment=smollm2_french", "algo=opcd", "algo.loss=topk_reverse_kl"],
        ["experiment=smollm2_french", "algo=sft", "algo.loss=nll"]]
    cmds.clear()
    rep.run_sweep("smollm2_french", ["opcd"], 3, 0, tmp_path, ["algo.loss=full_reverse_kl"])  # the user's wins
    assert "algo.loss=topk_reverse_kl" not in cmds[0] and cmds[0][-1] == "algo.loss=full_reverse_kl"
