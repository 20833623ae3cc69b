"""benchmarks/bench_vs_trl_toy.py: config assembly (the opcd command line, the TRL job and SDFTConfig,
identical prompts and contexts on both sides) and result writing on synthetic runs; (slow) the real
``--quick`` run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import benchmarks.bench_vs_trl_toy as B
import benchmarks.vs_trl_toy_report as R
from benchmarks.common import trl_sdft as T
from opcd import config as C

REPO = Path(__file__).resolve().parents[2]
C.register_configs()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------
def test_defaults_and_flags():
    s = B.settings_from_args(B.parse_args([]))
    assert (s.steps, s.prompts_per_step, s.max_tokens, s.temperature, s.lr) == (60, 16, 16, 1.0, 3e-4)
    assert s.model.endswith("toy-model") and not s.quick and s.eval_n_per_rule == 100
    assert s.threads == 1
    s = B.settings_from_args(B.parse_args(["--steps", "7", "--batch", "8", "--lr", "1e-4", "--max-tokens", "12",
                                           "--threads", "2"]))
    assert (s.steps, s.prompts_per_step, s.lr, s.max_tokens, s.threads) == (7, 8, 1e-4, 12, 2)
    q = B.settings_from_args(B.parse_args(["--quick"]))
    assert q.quick and q.steps == 3 and q.prompts_per_step == 16 and q.eval_n_per_rule == 10
    args = B.parse_args(["--quick"])
    assert B.output_paths(args, q, Path("/w")) == (Path("/w/report/vs_trl_toy.json"), Path("/w/report/vs_trl_toy.md"))
    assert B.output_paths(B.parse_args([]), s, Path("/w")) == (B.RESULTS, B.MARKDOWN)
    with pytest.raises(SystemExit, match="unknown method"):
        B.main(["--methods", "trl,nope"])


def test_opcd_command_composes_to_the_shared_job(tmp_path):
    s = B.Settings(steps=7, prompts_per_step=8, lr=1e-4)
    cmd = B.opcd_command(s, tmp_path / "run")
    assert cmd[:3] == [sys.executable, "-m", "opcd.train"] and cmd[-1] == f"hydra.run.dir={tmp_path / 'run'}"
    cfg = _compose(cmd[3:-1])
    assert cfg.experiment == "toy_opcd" and cfg.algo.name == "opcd" and cfg.task.name == "toy_rules"
    assert list(cfg.task.distill_rules) == [R.DISTILLED] and cfg.task.context_kind == "system"
    assert cfg.task.retain_ratio == 0  # like for like with SDFT (no retain prompts)
    # The settings TRL gets too:
    assert cfg.model.path == s.model and cfg.model.teacher_path is None  # frozen initial model as teacher
    assert cfg.steps == 7 and cfg.prompts_per_step == 8 and cfg.rollout.n == 1
    assert cfg.rollout.max_tokens == s.max_tokens and cfg.rollout.temperature == s.temperature and cfg.rollout.top_p == 1.0
    assert cfg.algo.loss == "full_reverse_kl" and cfg.algo.aggregation == "seq_mean" and cfg.algo.temperature == 1.0
    assert cfg.algo.lr == pytest.approx(1e-4) and cfg.algo.warmup_steps == 0 and cfg.algo.weight_decay == 0.0
    assert cfg.teacher.threads == cfg.learner.threads == s.threads == 1  # TRL's process: job["threads"]
    assert cfg.algo.grad_clip == 1.0 and cfg.save_every == 7 and cfg.logger.kind == "none" and cfg.eval_every == 0
    assert B.train_config(s).task == cfg.task  # the prompts come from the very config opcd.train composes
    assert not cfg.rollout.overlap
    overlap = _compose(B.opcd_command(s, tmp_path / "run", "opcd_overlap")[3:-1])
    assert overlap.rollout.overlap and overlap.task == cfg.task and overlap.algo == cfg.algo


def test_trl_job_and_config(tmp_path):
    pytest.importorskip("trl")
    s = B.Settings(steps=5)
    job = B.trl_job(s, tmp_path)
    assert len(job["prompts"]) == len(job["contexts"]) == 4096
    from opcd.tasks.toy_world import get_rule

    assert set(job["contexts"]) <= set(get_rule(R.DISTILLED).descriptions)
    json.dumps(job)  # goes to the worker as a file
    cfg = T.trl_config(job)
    assert cfg.distillation_mode == "full_logits" and cfg.distillation_alpha == 1.0
    assert cfg.teacher_model_kind == "base" and not cfg.use_vllm and cfg.num_loss_tokens_to_skip == 0
    assert cfg.per_device_train_batch_size == 16 and cfg.num_generations == 1 and cfg.generation_batch_size == 16
    assert cfg.max_completion_length == 16 and cfg.temperature == 1.0 and cfg.top_p == 1.0
    assert cfg.learning_rate == pytest.approx(3e-4) and cfg.lr_scheduler_type == "constant" and cfg.warmup_steps == 0
    assert cfg.weight_decay == 0.0 and cfg.max_grad_norm == 1.0 and cfg.max_steps == 5 and cfg.save_steps == 5
    assert job["threads"] == s.threads
    rows = T.dataset_rows(job)
    assert rows[3] == {"prompt": [{"role": "user", "content": job["prompts"][3]}],
                       "privileged_context": job["contexts"][3]}


def test_both_trainers_see_identical_prompts():
    """TRL's tokenisation (SDFTTrainer._tokenize_prompts) of the student row and of the teacher prompt
    built by the benchmark's context builder equals opcd's rendering of the same record."""
    from opcd.phases import render
    from opcd.modeling import load_tokenizer

    tok = load_tokenizer(B.Settings().model)
    recs = B.training_records(B.Settings())[:5]
    rows = T.dataset_rows({"prompts": [r["prompt"] for r in recs], "contexts": [r["context"] for r in recs]})

    def trl_tokenize(convs):
        return tok.apply_chat_template(conversation=convs, add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]

    assert trl_tokenize([r["prompt"] for r in rows]) == render(tok, recs, False)
    teacher = [T.system_message_prompt(r["prompt"], r["privileged_context"]) for r in rows]
    assert trl_tokenize(teacher) == render(tok, recs, True)


# ---------------------------------------------------------------------------------------------
# Result writing on synthetic runs
# ---------------------------------------------------------------------------------------------
def _table(none, system, others):
    rules = ["shift_next", "upper", "sort"]
    return {B_DISTILLED: {"system": system, "none": none}, **{r: {"system": others, "none": 0.05} for r in rules},
            "mean": {"system": 0.9, "none": 0.1}}


B_DISTILLED = "reverse"


def _trl_run(t0, step_s, tokens):
    rows = [{"event": "start", "time": t0 + 5}, {"event": "train_begin", "time": t0 + 20}]
    rows += [{"event": "step", "step": i, "seconds": s, "time": t0 + 20 + i, "rollout_s": s / 2, "rollout_tokens": k,
              "teacher_s": 0.1, "teacher_tokens": 900} for i, (s, k) in enumerate(zip(step_s, tokens), 1)]
    rows.append({"event": "save", "step": len(step_s), "time": t0 + 40, "path": "/t/ck"})
    return {"t_start": t0, "t_end": t0 + 50, "rows": rows,
            "checkpoints": [{"step": len(step_s), "path": "/t/ck", "time": t0 + 40}]}


def _opcd_run(t0, step_s, lens):
    rows = [{"step": 0, "eval/distilled/none": 0.0}]
    rows += [{"step": i, "step/seconds": s, "rollout/response_len": n, "rollout/seconds": 0.2,
              "rollout/tokens_per_s": 400.0, "teacher/seconds": 0.1, "teacher/tokens_per_s": 5000.0,
              "learner/seconds": 0.3, "learner/tokens": 1000.0, "sync/seconds": 0.05}
             for i, (s, n) in enumerate(zip(step_s, lens), 1)]
    return {"t_start": t0, "t_end": t0 + 90, "step_stamps": {"1": t0 + 60}, "rows": rows,
            "checkpoints": [{"step": len(step_s), "path": "/o/step_4", "time": t0 + 85}]}


def test_report_and_files(tmp_path):
    s = B.Settings(steps=4, prompts_per_step=16)
    runs = {"trl": _trl_run(1000.0, [3.0, 2.0, 2.5, 2.0], [96, 80, 80, 80]),
            "opcd": _opcd_run(5000.0, [1.5, 0.5, 1.0, 0.5], [6.0, 5.0, 5.0, 5.0])}
    assert R.step_series("opcd", {**runs["opcd"], "prompts_per_step": 16})[1] == [96.0, 80.0, 80.0, 80.0]
    evals = {"base": {"accuracy": _table(0.02, 1.0, 1.0)}, "trl": {"accuracy": _table(0.60, 0.9, 0.5)},
             "opcd": {"accuracy": _table(0.95, 1.0, 0.7)}}
    spec = B.eval_spec(s, runs)
    assert spec == [{"label": "base", "path": s.model}, {"label": "trl", "path": "/t/ck"},
                    {"label": "opcd", "path": "/o/step_4"}]
    report = R.build_report(s, runs, evals, {"date": "2026-01-01", "cpu": "2 cores", "packages": {"trl": "1.16"},
                                                 "loadavg": 1.25})
    t, o = report["methods"]["trl"], report["methods"]["opcd"]
    assert t["timing"]["median_s_per_step"] == pytest.approx(2.25) and o["timing"]["median_s_per_step"] == 0.75
    assert t["timing"]["tokens_per_s"] == pytest.approx(240 / 6.5)  # steps 2..N
    assert o["timing"]["tokens_per_s"] == pytest.approx(240 / 2.0) and o["timing"]["mean_response_tokens"] == 5.25
    assert o["timing"]["phases"]["sync"]["s_per_step"] == pytest.approx(0.05)  # vs_trl_smollm2.timing_summary
    assert report["opcd_speedup_vs_trl"] == pytest.approx(3.0)
    assert (o["distilled_none"], o["distilled_system"]) == (0.95, 1.0) and o["others_system"] == pytest.approx(0.7)
    assert report["base"]["distilled_none"] == 0.02

    paths = R.write_outputs(report, tmp_path / "r" / "vs_trl_toy.json", tmp_path / "vs_trl_toy.md")
    assert json.loads(paths["json"].read_text())["methods"]["opcd"]["timing"]["steps"] == 4
    md = paths["md"].read_text()
    assert md.startswith("<!-- rendered: vs_trl_toy_md -->\n### End to end against TRL on the toy model\n")
    assert "| TRL SDFTTrainer | 2.25 | 37 | 60.0% | 90.0% | 50.0% | 4 / 4 | 0 min 50 s (0 min 20 s) |" in md
    assert "| opcd (OPCD) | 0.75 | 120 | 95.0% | 100.0% | 70.0% | 4 / 4 | 1 min 30 s (0 min 58 s) |" in md
    assert "| base model (before training) | – | – | 2.0% |" in md
    assert "retain_ratio=0" in md and "system message" in md and "opcd / TRL (median s/step, one run): 3.00×" in md and "lr 0.0003" in md and "load average 1.2" in md


def test_step_rates_against_the_faster_trl_configuration(tmp_path):
    s = B.Settings(steps=4, prompts_per_step=16)
    vllm = _trl_run(3000.0, [1.0, 1.0, 1.5, 1.0], [96, 80, 80, 80])
    vllm["rows"].insert(1, {"event": "config", "time": 3006.0, "generation": "vllm_colocate", "use_vllm": True,
                            "vllm_mode": "colocate", "trl": "1.16.0", "vllm": "0.31.0"})
    runs = {"trl": _trl_run(1000.0, [3.0, 2.0, 2.5, 2.0], [96, 80, 80, 80]), "trl_vllm": vllm,
            "opcd": _opcd_run(5000.0, [1.5, 0.5, 1.0, 0.5], [6.0, 5.0, 5.0, 5.0])}
    report = R.build_report(s, runs, {})
    assert report["trl_reference"] == "trl_vllm" and report["methods"]["trl_vllm"]["trl_config"]["use_vllm"]
    assert report["methods"]["trl"]["trl_config"] == {"generation": "hf_generate"}
    assert report["speedup_vs_trl"] == {"opcd": pytest.approx(1.0 / 0.75)}  # TRL configs are not compared to TRL
    md = R.markdown(report)
    assert "| TRL SDFTTrainer, vLLM colocate | 1.00 |" in md and "vLLM 0.31.0" in md
    assert "Step rate opcd / TRL SDFTTrainer, vLLM colocate (median s/step, one run): 1.33×." in md
    paths = R.write_outputs(report, tmp_path / "vs_trl_toy.json", tmp_path / "vs_trl_toy.md")
    assert json.loads(paths["json"].read_text())["methods"]["trl_vllm"]["trl_config"]["generation"] == "vllm_colocate"
    assert B.parse_args([]).methods == "trl,opcd,opcd_overlap" and "trl_vllm" in B.METHODS


def test_report_with_a_missing_evaluation():
    s = B.quick_settings()
    report = R.build_report(s, {"opcd": _opcd_run(0.0, [1.0, 1.0], [5.0, 5.0])}, {})
    assert report["base"] is None and report["methods"]["opcd"]["accuracy"] is None
    assert "(--quick smoke run" in R.markdown(report) and "| opcd (OPCD) | 1.00 | 80 | – |" in R.markdown(report)


# ---------------------------------------------------------------------------------------------
# The real thing
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """TRL and opcd for 2 steps each on the toy model, evaluated and written (a few minutes)."""
    pytest.importorskip("trl")
    out = tmp_path / "report"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_vs_trl_toy.py"), "--quick", "--steps", "2",
                    "--work-dir", str(tmp_path / "work"), "--out-dir", str(out)], check=True, cwd=REPO, timeout=900)
    data = json.loads((out / "vs_trl_toy.json").read_text())
    for m in ("trl", "opcd", "opcd_overlap"):
        r = data["methods"][m]
        assert r["timing"]["steps"] == 2 and r["timing"]["median_s_per_step"] > 0 and r["timing"]["tokens_per_s"] > 0
        assert r["final_checkpoint"]["step"] == 2 and 0.0 <= r["distilled_none"] <= 1.0
    assert "### End to end against TRL" in (out / "vs_trl_toy.md").read_text()
