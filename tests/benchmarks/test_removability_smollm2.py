"""benchmarks/removability_smollm2.py: the grid (every row a valid config, references that pair), the
plan and its dry run, and the report's statistics and verdicts on synthetic evaluations (fast)."""
import json
import random

import pytest

from benchmarks import removability_smollm2 as rm
from benchmarks import removability_smollm2_report as rp


# --------------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------------
def test_every_reference_exists_and_pairs_with_its_rows():
    for row in rm.GRID:
        ref = rm.ROWS[row.reference]
        assert (ref.budget, ref.distill, ref.reference) == (row.budget, row.distill, ref.name), row.name
        assert ref.algo == "opcd" and ref.loss == row.loss, row.name
    assert len(rm.ROWS) == len(rm.GRID)


def test_grid_covers_the_issue_axes():
    over = {o for r in rm.GRID for o in r.overrides}
    assert len({o for o in over if o.startswith("algo.nca_beta=")}) >= 3  # beta values
    assert {"algo.nca_support=topk", "algo.nca_positions=agree", "algo.nca_after_step=10",
            "algo.nca_mode=sg_context", "task.retain_ratio=0.25"} <= over
    assert {r.loss for r in rm.GRID} == {"full_reverse_kl", "topk_reverse_kl"}  # top-16 against the full vocabulary
    shipped = [r for r in rm.GRID if r.budget == "shipped"]
    assert {r.distill for r in shipped} == {"french", "spanish"}  # a second real-model system prompt
    assert {r.name for r in shipped} >= {"shipped@95", "paper@95", "opcd@95", "shipped@95_es"}
    assert "teacher rollouts" in rm.NOT_RUN


@pytest.mark.parametrize("name", list(rm.ROWS))
def test_every_row_composes_to_a_valid_config(name, tmp_path):
    from opcd.algorithms import algo_spec

    row = rm.ROWS[name]
    s = rm.Settings(model="/m")
    cmd = rm.train_command(row, 1, s, tmp_path)
    assert cmd[1:3] == ["-m", "opcd.train"] and cmd[-len(row.overrides) or len(cmd):] == list(row.overrides)
    assert f"steps={s.steps[row.budget]}" in cmd and "seed=1" in cmd and "rollout.seed=1" in cmd
    assert "prompts_per_step=8" in cmd and f"algo.loss={row.loss}" in cmd and f"task.distill_prompt={row.distill}" in cmd
    algo = rm.resolved_algo(cmd)
    algo_spec(type("A", (), algo))  # refused options would raise here, as at start-up
    for o in row.overrides:
        if o.startswith("algo."):
            k, v = o[5:].split("=")
            assert str(algo[k]) == v, (name, o)
    assert (algo["nca_beta"] > 0) == (row.algo == "opcd_nca")


# --------------------------------------------------------------------------------------------------
# Plan and dry run
# --------------------------------------------------------------------------------------------------
def test_plan_adds_references_and_follows_seeds_and_steps(tmp_path):
    args = rm.parse_args(["--rows", "nca_agree,paper@95_es", "--seeds", "3", "--steps", "2", "--model", "/m"])
    s = rm.settings_from_args(args)
    runs = rm.plan([rm.ROWS[n] for n in ("nca_agree", "paper@95_es")], s, tmp_path)
    assert [(r["row"], r["seed"]) for r in runs] == [("opcd", 3), ("opcd@95_es", 3), ("nca_agree", 3), ("paper@95_es", 3)]
    assert not any(r["trained"] or r["evaluated"] for r in runs)
    assert "steps=2" in rm.train_command(rm.ROWS["nca_agree"], 3, s, tmp_path)
    d = rm.run_dir(tmp_path, rm.ROWS["opcd"], 3)
    d.mkdir(parents=True)
    (d / "bench_key.json").write_text("{}")
    (d / "eval_sysprompt.json").write_text("{}")
    (d / "eval_ifeval.json").write_text("{}")
    assert rm.plan([rm.ROWS["opcd"]], s, tmp_path)[0] == {**runs[0], "trained": True, "evaluated": True}


def test_dry_run_prints_the_runs_and_estimates(tmp_path, capsys):
    assert rm.main(["--dry-run", "--rows", "nca_sg_context", "--seeds", "0,1", "--work-dir", str(tmp_path),
                    "--model", "/m"]) == 0
    out = capsys.readouterr().out
    assert out.count("-m opcd.train") == 4 and "algo.nca_mode=sg_context" in out
    assert "estimated time left:" in out and "base model evaluation: to do" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    train, ev = rm.estimate_s(rm.ROWS["nca_b0.5"], rm.Settings(model="/m"))
    assert train == rm.STARTUP_S + 30 * rm.S_PER_STEP["nca"] and ev > 4 * 252 * rm.EVAL_S_PER_REPLY


def test_eval_commands_use_the_heldout_set_and_the_probe(tmp_path):
    cmds = rm.eval_commands("/ck", tmp_path, rm.Settings(model="/m"))
    sp, ife = cmds["eval_sysprompt.json"], cmds["eval_ifeval.json"]
    assert sp[1:3] == ["-m", "opcd.eval.sysprompt"] and "heldout240" in sp and "--prompts=252" in sp
    assert ife[1:3] == ["-m", "opcd.eval.ifeval"] and str(tmp_path / "eval_ifeval.json") in ife


# --------------------------------------------------------------------------------------------------
# Report: statistics and verdicts on synthetic evaluations
# --------------------------------------------------------------------------------------------------
def test_harm_is_a_ratio_over_prompts_pooled_over_seeds():
    num, den = rp.harm_parts([[1, 1, 0, 1]], [[1, 0, 0, 0]])
    assert (num, den) == ([0, 1, 0, 1], [1, 1, 0, 1]) and rp.ratio_interval(num, den)["rate"] == pytest.approx(2 / 3)
    num, den = rp.harm_parts([[1, 1], [0.5, 1]], [[0, 1], [1, 1]])  # two seeds, samples: rates in [0, 1]
    assert num == [1.0, 0.0] and den == [1.5, 2.0]
    same = rp.paired_ratio_difference((num, den), (num, den))
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0}
    assert rp.ratio_interval([0, 0], [0, 0])["rate"] is None


def _sys(fr_without, fr_with, es_with, cat_with):
    z = [0.0] * len(fr_without)
    return {"/ck": {"rates": {"french": {"with": {"per_prompt": fr_with}, "without": {"per_prompt": fr_without}},
                              "spanish": {"with": {"per_prompt": es_with}, "without": {"per_prompt": z}},
                              "cat": {"with": {"per_prompt": cat_with}, "without": {"per_prompt": z}}}}}


def _seed(rng, p_x, p_xc, p_es, p_cat, learner_s, cons=None, n=240):
    draw = lambda p: [float(rng.random() < p) for _ in range(n)]  # noqa: E731
    metrics = [{"step": t, "learner/seconds": learner_s, **(cons or {})} for t in range(1, 6)]
    return {"sysprompt": _sys(draw(p_x), draw(p_xc), draw(p_es), draw(p_cat)),
            "ifeval": {"/ck": {"strict_per_prompt": draw(0.4)[:48]}}, "metrics": metrics, "algo": {}}


def _data(shipped_like_ref: bool):
    rng = random.Random(0)
    ref = {s: _seed(rng, 0.7, 0.8, 0.7, 0.2, 10.0) for s in (0, 1, 2)}
    if shipped_like_ref:  # the same per-prompt outcomes as the reference: every difference is exactly 0
        shipped = {s: {**json.loads(json.dumps(v)), "metrics": [{"step": t, "learner/seconds": 12.0,
                   "loss/consistency": 0.1, "loss/consistency_first": 0.3, "loss/consistency_rest": 0.05,
                   "loss/consistency_kept": 1.0} for t in range(1, 6)]} for s, v in ref.items()}
    else:  # collapses with the prompt and costs 3x the learner time
        shipped = {s: _seed(rng, 0.7, 0.1, 0.2, 0.0, 30.0) for s in (0, 1, 2)}
    base = {"eval_sysprompt.json": ref[0]["sysprompt"], "eval_ifeval.json": ref[0]["ifeval"]}
    return {"runs": {"opcd@95": ref, "shipped@95": shipped}, "base": base}


def _report(shipped_like_ref):
    rows = [rm.ROWS["opcd@95"], rm.ROWS["shipped@95"], rm.ROWS["paper@95"]]
    return rp.build_report(rows, _data(shipped_like_ref), {"eval_prompts": 240, "eval_samples": 1,
                                                           "steps": {"ablation": 30, "shipped": 95}}, rm.NOT_RUN)


def test_identical_outcomes_meet_every_margin():
    rep = _report(True)
    e = rep["rows"]["shipped@95"]
    got = {c["key"]: c["verdict"] for c in e["checks"]}
    assert got == {"acc_x": "met", "harm": "met", "spanish": "met", "cat": "met", "learner": "met",
                   "acc_xc": got["acc_xc"]}  # base = seed 0 of the reference: a real difference, sampled
    assert e["vs_reference"]["acc_x"]["diff"] == 0.0 and e["vs_reference"]["seeds"] == [0, 1, 2]
    c = e["summary"]["consistency"]
    assert (c["first"], c["rest"], c["kept"]) == (pytest.approx(0.3), pytest.approx(0.05), 1.0)
    assert next(c for c in e["checks"] if c["key"] == "learner")["ratios"] == [1.2, 1.2, 1.2]
    assert "checks" not in rep["rows"]["opcd@95"] and "summary" not in rep["rows"]["paper@95"]
    assert e["summary"]["acc_x_by_style"] == {}  # 240 synthetic prompts are not heldout240's 252


def test_acc_x_is_broken_down_by_prompt_style():
    from opcd.tasks.sysprompt_heldout import HELDOUT_PROMPTS, STYLES

    x = [float(style == "chat") for style, _ in HELDOUT_PROMPTS]  # right exactly on the chat prompts
    seeds = {0: {"sysprompt": _sys(x, x, x, x), "ifeval": None, "metrics": [], "algo": {}}}
    sm = rp.row_summary(rp.views(seeds, "french", ["spanish", "cat"]), seeds)
    assert sm["acc_x_by_style"] == {s: float(s == "chat") for s in STYLES}


def test_a_collapse_is_missed_and_the_cost_bound_too():
    e = _report(False)["rows"]["shipped@95"]
    got = {c["key"]: c["verdict"] for c in e["checks"]}
    assert got["acc_x"] in ("met", "within noise") and got["acc_xc"] == "missed" and got["harm"] == "missed"
    assert got["spanish"] == "missed" and got["learner"] == "missed"
    h = e["vs_reference"]["harm"]
    assert h["lo"] > 0.03 and e["summary"]["harm"]["rate"] > 0.8


def test_markdown_renders_from_the_json(tmp_path):
    rep = _report(False)
    paths = rp.write_outputs(rep, tmp_path)
    back = json.loads(paths[1].read_text())
    assert rp.markdown(back) == paths[0].read_text()
    md = paths[0].read_text()
    assert "| `paper@95` | not run |" in md and "`shipped@95` against `opcd@95`" in md
    assert "- **missed**: Harm ≤ reference's + 3 points (90% interval (one-sided 95% bounds) [" in md
    assert "teacher rollouts" in md


def test_shipped_rows_wait_while_the_shipped_form_is_the_papers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rm, "shipped_is_paper", lambda s: True)
    assert rm.main(["--dry-run", "--seeds", "0", "--work-dir", str(tmp_path), "--model", "/m"]) == 0
    out = capsys.readouterr().out
    assert "shipped@95* rows skipped" in out and "shipped-95" not in out and "paper-95_es/seed0" in out
    monkeypatch.setattr(rm, "shipped_is_paper", lambda s: False)
    assert rm.main(["--dry-run", "--seeds", "0", "--work-dir", str(tmp_path), "--model", "/m"]) == 0
    assert "shipped-95_es/seed0" in capsys.readouterr().out

