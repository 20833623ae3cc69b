"""benchmarks/vs_trl_smollm2.py: config assembly (the opcd command line, the TRL job and SDFTConfig,
identical prompts on both sides) and result writing (table, JSON, PNG) on synthetic runs; (slow)
the real ``--quick`` run on the shipped toy model."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import benchmarks.vs_trl_smollm2 as B
import benchmarks.vs_trl_smollm2_report as R
from benchmarks.common import timing
from benchmarks.common import trl_sdft as T
from opcd import config as C
from opcd.eval.sysprompt import NONE, proportion

REPO = Path(__file__).resolve().parents[2]
C.register_configs()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["opcd", "opcd_nca"])
@pytest.mark.parametrize("quick", [False, True])
def test_opcd_command_composes_to_the_shared_job(method, quick, tmp_path):
    s = B.quick_settings() if quick else B.full_settings()
    cmd = B.opcd_command(method, s, tmp_path / "run")
    assert cmd[:3] == [sys.executable, "-m", "opcd.train"]
    assert f"hydra.run.dir={tmp_path / 'run'}" in cmd
    cfg = _compose([o for o in cmd[3:] if not o.startswith("hydra.")])
    assert cfg.experiment == "smollm2_french" and cfg.algo.name == method
    assert cfg.algo.nca_beta == (0.5 if method == "opcd_nca" else 0.0)
    # The settings TRL gets too:
    assert cfg.model.path == s.model and cfg.steps == s.steps and cfg.prompts_per_step == s.prompts_per_step
    assert cfg.rollout.n == 1 and cfg.rollout.max_tokens == s.max_tokens and cfg.rollout.temperature == s.temperature
    assert cfg.algo.lr == pytest.approx(s.lr) and cfg.algo.warmup_steps == 0 and cfg.algo.weight_decay == 0.0
    assert cfg.algo.loss == "full_reverse_kl" and cfg.algo.aggregation == "seq_mean" and cfg.algo.grad_clip == 1.0
    assert cfg.model.teacher_path is None  # the frozen initial model is the teacher (TRL: teacher_model_kind=base)
    assert cfg.task.name == "sysprompt" and cfg.task.distill_prompt == "french"
    assert list(cfg.task.other_prompts) == ["spanish", "cat"] and cfg.task.train_size == s.train_size
    assert cfg.save_every == s.save_every and cfg.keep_checkpoints == 0 and cfg.logger.kind == "none"
    assert cfg.eval_every == 0


def test_full_settings_match_the_issue():
    s = B.full_settings()
    assert (s.steps, s.prompts_per_step, s.max_tokens, s.temperature, s.lr) == (95, 8, 64, 1.0, 2e-5)
    assert s.model.endswith("SmolLM2-135M-Instruct") and s.save_every == 24
    e = s.eval
    assert (e.prompts, e.samples, e.temperature, e.top_p, e.max_tokens) == (60, 2, 0.7, 0.9, 128)
    with pytest.raises(ValueError):
        B.opcd_command("trl", s, Path("x"))
    s.opcd_steps = 190  # --opcd-steps: opcd gets its own budget (e.g. what fits in TRL's wall time)
    cmd = B.opcd_command("opcd", s, Path("x"))
    assert "steps=190" in cmd and "save_every=48" in cmd and B.trl_job(s, Path("x"))["steps"] == 95


def test_preset_alone_is_the_same_job():
    """`python -m opcd.train experiment=smollm2_french` without the benchmark's overrides."""
    cfg = _compose(["experiment=smollm2_french"])
    s = B.full_settings()
    assert cfg.model.path == s.model and cfg.model.max_model_len == 512 and cfg.model.dtype == "auto"
    assert (cfg.steps, cfg.prompts_per_step, cfg.rollout.max_tokens, cfg.rollout.temperature) == (95, 8, 64, 1.0)
    assert cfg.algo.loss == "full_reverse_kl" and cfg.algo.lr == pytest.approx(2e-5) and cfg.task.name == "sysprompt"
    assert cfg.save_every == 24 and cfg.keep_checkpoints == 0


def test_trl_job_and_config(tmp_path):
    pytest.importorskip("trl")
    s = B.quick_settings(steps=5)
    job = B.trl_job(s, tmp_path)
    assert len(job["prompts"]) == s.train_size and job["context"].startswith("Always reply in French")
    json.dumps(job)  # goes to the worker as a file
    cfg = T.trl_config(job)
    assert cfg.distillation_mode == "full_logits" and cfg.distillation_alpha == 1.0
    assert cfg.teacher_model_kind == "base" and not cfg.use_vllm
    assert cfg.per_device_train_batch_size == s.prompts_per_step and cfg.num_generations == 1
    assert cfg.generation_batch_size == s.prompts_per_step and cfg.gradient_accumulation_steps == 1
    assert cfg.max_completion_length == s.max_tokens and cfg.temperature == s.temperature and cfg.top_p == 1.0
    assert cfg.learning_rate == pytest.approx(s.lr) and cfg.lr_scheduler_type == "constant" and cfg.warmup_steps == 0
    assert cfg.weight_decay == 0.0 and cfg.max_grad_norm == 1.0 and cfg.optim == "adamw_torch"
    assert cfg.max_steps == 5 and cfg.save_steps == s.save_every == 3 and not cfg.save_only_model
    assert cfg.use_cpu and cfg.report_to in ([], "none", ["none"])
    rows = T.dataset_rows(job)
    assert rows[0]["prompt"] == [{"role": "user", "content": job["prompts"][0]}]
    assert rows[0]["privileged_context"] == job["context"]


def test_both_trainers_see_identical_prompts():
    """TRL tokenises conversations with the chat template like opcd.chat.encode_prompt does: the
    student turn alone, and (with the benchmark's builder) the context as the system message."""
    from opcd.chat import encode_prompt
    from opcd.config import ASSETS
    from opcd.modeling import load_tokenizer

    tok = load_tokenizer(str(ASSETS / "toy-model"))
    job = {"prompts": ["How do I cook rice so it is not sticky?"], "context": "Always reply in French."}
    row = T.dataset_rows(job)[0]

    def trl_tokenize(conv):  # SDFTTrainer._tokenize_prompts
        return tok.apply_chat_template(conversation=[conv], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"][0]

    p, c = job["prompts"][0], job["context"]
    assert trl_tokenize(row["prompt"]) == encode_prompt(tok, p)
    assert trl_tokenize(T.system_message_prompt(row["prompt"], c)) == encode_prompt(tok, p, c)
    stock = [{"role": "user", "content": f"{p}\n\n{c}"}]  # SDFT's default teacher_prompt_template
    assert trl_tokenize(stock) != encode_prompt(tok, p, c)


def test_eval_spec():
    s = B.quick_settings()
    runs = {"trl": {"checkpoints": [{"step": 2, "path": "/t/2"}, {"step": 3, "path": "/t/3"}]},
            "opcd": {"checkpoints": [{"step": 2, "path": "/o/2"}, {"step": 3, "path": "/o/3"}]}}
    spec = B.eval_spec(s, runs)
    assert spec[0] == {"label": "base", "path": s.model, "conditions": [NONE, "french", "spanish", "cat"]}
    by = {x["label"]: x for x in spec}
    assert by["trl/step_2"]["conditions"] == [NONE] and by["opcd/step_3"]["conditions"] == spec[0]["conditions"]
    assert len(spec) == 5


# ---------------------------------------------------------------------------------------------
# Result writing on synthetic runs
# ---------------------------------------------------------------------------------------------
def _rates(fr_with, fr_without, es_with, cat_with, n=120):
    def p(r):
        k = round(r * n)
        return proportion([True] * k + [False] * (n - k))

    return {"french": {"with": p(fr_with), "without": p(fr_without)},
            "spanish": {"with": p(es_with), "without": p(0.0)}, "cat": {"with": p(cat_with), "without": p(0.0)}}


def _opcd_run(t0, step_s, ckpt_times):
    rows = [{"step": 0, "eval/distilled/none": 0.0}]
    for i, s in enumerate(step_s, 1):
        rows.append({"step": i, "step/seconds": s, "rollout/seconds": 2.0, "rollout/tokens_per_s": 256.0,
                     "teacher/seconds": 1.0, "teacher/tokens_per_s": 900.0, "learner/seconds": 4.0,
                     "learner/tokens": 512.0, "sync/seconds": 0.5})
    return {"t_start": t0, "t_end": t0 + 60 + sum(step_s) + 10, "step_stamps": {"1": t0 + 60 + step_s[0]},
            "rows": rows, "checkpoints": [{"step": st, "path": f"/o/{st}", "time": t0 + t} for st, t in ckpt_times]}


def _trl_run(t0, step_s, ckpt_times):
    rows = [{"event": "start", "time": t0 + 5}, {"event": "train_begin", "time": t0 + 20}]
    for i, s in enumerate(step_s, 1):
        rows.append({"event": "step", "step": i, "seconds": s, "time": t0 + 20 + s * i, "rollout_s": 6.0,
                     "rollout_tokens": 480, "teacher_s": 2.0, "teacher_tokens": 800})
    rows += [{"event": "save", "step": st, "time": t0 + t, "path": f"/t/{st}"} for st, t in ckpt_times]
    return {"t_start": t0, "t_end": t0 + 20 + sum(step_s) + 5, "rows": rows,
            "checkpoints": [{"step": st, "path": f"/t/{st}", "time": t0 + t} for st, t in ckpt_times]}


@pytest.fixture
def synthetic():
    s = B.quick_settings(steps=4)
    runs = {"trl": _trl_run(1000.0, [20.0, 16.0, 16.0, 16.0], [(2, 60.0), (4, 95.0)]),
            "opcd": _opcd_run(5000.0, [9.0, 7.0, 7.0, 7.0], [(2, 80.0), (4, 95.0)]),
            "opcd_nca": _opcd_run(9000.0, [10.0, 8.0, 8.0, 8.0], [(2, 82.0), (4, 100.0)])}
    evals = {"base": {"rates": _rates(0.55, 0.0, 0.70, 0.20)},
             "trl/step_2": {"rates": _rates(0, 0.10, 0, 0)}, "trl/step_4": {"rates": _rates(0.60, 0.30, 0.50, 0.10)},
             "opcd/step_2": {"rates": _rates(0, 0.40, 0, 0)}, "opcd/step_4": {"rates": _rates(0.62, 0.58, 0.55, 0.15)},
             "opcd_nca/step_2": {"rates": _rates(0, 0.35, 0, 0)},
             "opcd_nca/step_4": {"rates": _rates(0.60, 0.55, 0.68, 0.19)}}
    return s, runs, evals


def test_timing_summaries(synthetic):
    s, runs, _ = synthetic
    trl = timing.timing_summary("trl", runs["trl"])
    assert trl["steps"] == 4 and trl["s_per_step"] == pytest.approx(16.0)  # the warm-up step is left out
    assert trl["startup_s"] == pytest.approx(20.0) and trl["wall_s"] == pytest.approx(93.0)
    assert trl["phases"]["rollout"]["tokens_per_s"] == pytest.approx(80.0)
    assert trl["phases"]["teacher"]["tokens_per_s"] == pytest.approx(400.0)
    assert trl["phases"]["learner"]["s_per_step"] == pytest.approx(8.0)
    op = timing.timing_summary("opcd", runs["opcd"])
    assert op["s_per_step"] == pytest.approx(7.0) and op["startup_s"] == pytest.approx(60.0)
    assert op["phases"]["rollout"]["tokens_per_s"] == pytest.approx(256.0)
    assert op["phases"]["learner"]["tokens_per_s"] == pytest.approx(128.0)
    assert op["phases"]["sync"]["s_per_step"] == pytest.approx(0.5)


def test_report_targets_and_files(synthetic, tmp_path):
    s, runs, evals = synthetic
    report = R.build_report(s, runs, evals, {"date": "2026-01-01", "cpu": "2 cores"})
    opcd = report["methods"]["opcd"]
    assert [p["step"] for p in opcd["curve"]] == [0, 2, 4] and opcd["curve"][1]["t"] == pytest.approx(80.0)
    assert opcd["curve"][0]["rate"]["rate"] == 0.0  # the base model at t = 0
    assert opcd["harm"]["cat"]["with"]["diff"] == pytest.approx(0.05, abs=0.01)
    t = report["targets"]
    assert t["opcd: steps/s vs TRL (>= 2x)"]["met"] and t["opcd: steps/s vs TRL (>= 2x)"]["value"] == pytest.approx(16 / 7)
    assert t["opcd_nca: steps/s vs TRL (>= 2x)"]["met"]
    # within TRL's 93 s only opcd's step-2 checkpoint (80 s: 40%) counts; its step-4 one (95 s) is too late
    reach = t["opcd: French w/o prompt within TRL's wall time >= teacher's with-prompt rate"]
    assert reach["value"] == pytest.approx(0.40, abs=0.01) and reach["met"] is False
    assert t["opcd: ... and beats TRL's final rate"]["met"] is True  # 40% > TRL's 30%
    assert t["opcd_nca: other prompts' with-prompt rates drop less than under TRL"]["met"] is True

    paths = R.write_outputs(report, tmp_path / "out", png=False)  # the PNG: test_png (needs matplotlib)
    assert "png" not in paths and not (tmp_path / "out" / "vs_trl_smollm2.png").exists()
    data = json.loads(paths["json"].read_text())
    assert set(data["methods"]) == {"trl", "opcd", "opcd_nca"} and data["settings"]["steps"] == 4
    md = paths["md"].read_text()
    assert "| method | s/step |" in md and "TRL SDFTTrainer" in md and "opcd_nca (OPCD + consistency)" in md
    assert "french w/o prompt" in md and "55.0% [" in md and "system message" in md
    assert md.startswith("<!-- rendered: vs_trl_smollm2_md -->\n# Head to head")
    # Restated under the one rule: one run of a step-rate ratio is never "met", whatever its value.
    assert "steps/s vs TRL SDFTTrainer; target ≥ 2×: 2.29×: **not met (1 run: 2.29×; target needs ≥ 3 runs)**" in md
    checks = {c.benchmark.split(",")[0]: c.verdict.status for c in R.checks(report)}
    assert checks["opcd: steps/s vs TRL SDFTTrainer"] == "too few runs"


def test_png(synthetic, tmp_path):
    pytest.importorskip("matplotlib")  # the `bench` extra
    s, runs, evals = synthetic
    paths = R.write_outputs(R.build_report(s, runs, evals), tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    R.plot(R.build_report(s, {"opcd": runs["opcd"]}, evals), tmp_path / "no_trl.png")  # no TRL line


def _trl_vllm_run(t0, step_s, ckpt_times):
    """A ``trl_vllm`` record: the worker's config event, and the weight sync timed inside generation."""
    rec = _trl_run(t0, step_s, ckpt_times)
    rec["rows"].insert(1, {"event": "config", "time": t0 + 6, "generation": "vllm_colocate", "use_vllm": True,
                           "vllm_mode": "colocate", "trl": "1.16.0", "vllm": "0.31.0"})
    for r in rec["rows"]:
        if r["event"] == "step":
            r.update(rollout_s=3.0, sync_s=1.0)
    return rec


def test_report_against_the_faster_trl_configuration(synthetic, tmp_path):
    s, runs, evals = synthetic
    runs = {"trl_vllm": _trl_vllm_run(3000.0, [14.0, 10.0, 10.0, 10.0], [(2, 40.0), (4, 70.0)]), **runs}
    evals = {**evals, "trl_vllm/step_2": {"rates": _rates(0, 0.05, 0, 0)},
             "trl_vllm/step_4": {"rates": _rates(0.55, 0.20, 0.60, 0.20)}}
    report = R.build_report(s, runs, evals)
    v, hf = report["methods"]["trl_vllm"], report["methods"]["trl"]
    assert v["trl_config"] == {"generation": "vllm_colocate", "use_vllm": True, "vllm_mode": "colocate",
                               "trl": "1.16.0", "vllm": "0.31.0"}
    assert hf["trl_config"] == {"generation": "hf_generate"}  # a record without a config event
    assert "trl_config" not in report["methods"]["opcd"]
    ph = v["timing"]["phases"]  # the sync is taken out of the rollout
    assert ph["rollout"]["s_per_step"] == pytest.approx(2.0) and ph["sync"]["s_per_step"] == pytest.approx(1.0)
    assert "sync" not in hf["timing"]["phases"]
    assert report["trl_reference"] == "trl_vllm"  # 10 s/step against HF generate's 16
    t = report["targets"]
    assert t["opcd: steps/s vs TRL (>= 2x)"]["value"] == pytest.approx(10 / 7) and not t["opcd: steps/s vs TRL (>= 2x)"]["met"]
    assert t["opcd: ... and beats TRL's final rate"]["trl"] == pytest.approx(0.20, abs=0.01)
    md = R.markdown(report)
    assert "| TRL SDFTTrainer, vLLM colocate | 10.00 |" in md and "| TRL SDFTTrainer, vLLM colocate | 2.00 |" in md
    assert "vLLM 0.31.0" in md and "faster TRL configuration: TRL SDFTTrainer, vLLM colocate." in md
    # Slower vLLM: HF generate stays the reference.
    runs["trl_vllm"] = _trl_vllm_run(3000.0, [30.0, 20.0, 20.0, 20.0], [(2, 40.0), (4, 70.0)])
    assert R.build_report(s, runs, evals)["trl_reference"] == "trl"


def test_trl_configurations_on_the_command_line(tmp_path):
    assert B.parse_args([]).methods == "trl,opcd,opcd_nca"  # trl_vllm only when asked for
    assert {"trl", "trl_vllm"} <= set(B.METHODS)
    s = B.quick_settings(steps=5)
    assert B.trl_job(s, tmp_path, "trl_vllm")["generation"] == "vllm_colocate"
    assert B.trl_job(s, tmp_path)["generation"] == "hf_generate"
    s.opcd_steps = 9
    assert s.steps_for("trl_vllm") == s.steps_for("trl") == 5 and s.steps_for("opcd") == 9


def test_report_without_trl(synthetic):
    s, runs, evals = synthetic
    report = R.build_report(s, {"opcd": runs["opcd"]}, evals)
    assert report["targets"] == {}
    assert "opcd (OPCD)" in R.markdown(report)


def test_missing_packages_are_named_before_training(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("trl", "gguf") else real(n, *a))
    assert B.missing_packages(["trl", "opcd"], convert=True)[-2:] == ["trl", "gguf"]
    assert not {"trl", "gguf"} & set(B.missing_packages(["opcd"], convert=False))
    with pytest.raises(SystemExit, match=r"missing package\(s\) .*trl, gguf.*\[bench\]"):
        B.main(["--methods", "trl,opcd", "--steps", "1"])


# ---------------------------------------------------------------------------------------------
# The real thing, on the toy model
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """TRL, opcd and opcd_nca for 2 steps each on the shipped toy model, evaluated and written (~2 min)."""
    pytest.importorskip("trl")
    pytest.importorskip("langdetect")
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "vs_trl_smollm2.py"), "--quick", "--steps", "2",
                    "--work-dir", str(tmp_path / "work"), "--out-dir", str(out)], check=True, cwd=REPO, timeout=600)
    data = json.loads((out / "vs_trl_smollm2.json").read_text())
    for m in ("trl", "opcd", "opcd_nca"):
        r = data["methods"][m]
        assert r["timing"]["steps"] == 2 and r["timing"]["s_per_step"] > 0
        assert [c["step"] for c in r["checkpoints"]] == [1, 2] and len(r["curve"]) == 3
        assert r["final"]["french"]["with"]["n"] == 4 and r["final"]["french"]["without"]["n"] == 4
    assert (out / "vs_trl_smollm2.md").exists() and (out / "vs_trl_smollm2.png").stat().st_size > 1000
