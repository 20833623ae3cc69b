"""End to end against TRL on the toy world (issue #5, item 5): opcd vs ``trl.experimental.sdft.SDFTTrainer``.

    python benchmarks/bench_vs_trl_toy.py                    # 60 steps each, 16 prompts x 1 sample, 16 tokens
    python benchmarks/bench_vs_trl_toy.py --steps 100 --batch 32 --lr 1e-4
    python benchmarks/bench_vs_trl_toy.py --methods trl,trl_vllm,opcd   # TRL with HF generate and with vLLM
    python benchmarks/bench_vs_trl_toy.py --quick            # 3 steps, small evaluation: checks the plumbing

(``python -m benchmarks.bench_vs_trl_toy ...`` from the repo root is the same.)

The job: distil the toy world's ``reverse`` rule description (a system message) into the shipped
1M-parameter character-level Llama (``opcd/assets/toy-model``), on this CPU. Both trainers get the
same training prompts with the same contexts (``opcd.tasks.load_task`` on the ``toy_opcd``
experiment's task config, ``task.retain_ratio=0``), ``--batch`` prompts x 1 sample per step,
``--max-tokens`` new tokens at ``--temperature``, full-vocabulary reverse KL KL(student || teacher)
averaged per response then over the batch, the frozen initial model as teacher, AdamW at a constant
``--lr`` (no warm-up, no weight decay, grad-norm clip 1.0) and ``--steps`` optimizer steps.

* TRL: ``SDFTTrainer`` (``distillation_mode="full_logits"``, ``distillation_alpha=1.0``,
  ``teacher_model_kind="base"``), with the context as the *system* message exactly as opcd renders
  it -- ``benchmarks.common.trl_sdft`` and its worker, shared with ``benchmarks/vs_trl_smollm2.py``.
  ``trl`` generates with HF ``generate``; ``trl_vllm`` (not in the default ``--methods``) with vLLM in
  colocate mode. Step-rate ratios are against the faster TRL configuration that ran.
* opcd: the real stack, ``python -m opcd.train experiment=toy_opcd algo=opcd task.retain_ratio=0 ...``
  (Ray actors: vLLM rollout engines, teacher, DeepSpeed learner); per-step times from its metrics.jsonl.

``task.retain_ratio=0``: the default toy experiment mixes in "retain" prompts of the other rules
whose context the student also sees; SDFT has no such notion, so both sides train on the distilled
rule's prompts only (expect the other rules' with-context accuracy to suffer on both sides).

The final checkpoint of each side (and the base model) is then scored by the same evaluator, the
toy world's vLLM evaluator (``opcd.eval.run_eval`` with the toy model card's ``eval_config``: test
split, greedy, exact match). Reported (``benchmarks/vs_trl_toy_report.py``): s/step (median over
steps), response tokens per second of step time, final no-context accuracy on ``reverse`` (the
distilled rule), and with-context accuracies. Outputs: ``benchmarks/results/vs_trl_toy.json`` and
``benchmarks/vs_trl_toy.md`` (``--quick``: under the work dir, ``outputs/vs_trl_toy_quick/report``,
so a smoke run never overwrites the real numbers).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if not __package__:  # `python benchmarks/bench_vs_trl_toy.py`: the repo root on the path for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO  # noqa: E402
from benchmarks.common.machine import environment, loadavg  # noqa: E402
from benchmarks.common.process import run_process  # noqa: E402
from benchmarks.common.report import mmss  # noqa: E402
from benchmarks.common.runs import parse_methods, train_run  # noqa: E402
from benchmarks.common.trl_sdft import TRL_CONFIGS, is_trl, make_job  # noqa: E402
from benchmarks.vs_trl_toy_report import build_report, table, write_outputs  # noqa: E402

# opcd variants: extra Hydra overrides on top of the shared job.
OPCD_VARIANTS = {"opcd": [], "opcd_overlap": ["rollout.overlap=true"]}
METHODS = (*TRL_CONFIGS, *OPCD_VARIANTS)  # what --methods accepts
DEFAULT_METHODS = ("trl", "opcd", "opcd_overlap")
RESULTS = REPO / "benchmarks" / "results" / "vs_trl_toy.json"
MARKDOWN = REPO / "benchmarks" / "vs_trl_toy.md"


@dataclass
class Settings:
    """One benchmark job; both trainers read the same fields."""

    model: str = field(default_factory=lambda: str(REPO / "opcd" / "assets" / "toy-model"))  # student = teacher
    steps: int = 60  # optimizer steps per method
    prompts_per_step: int = 16  # prompts per step, one sample each
    max_tokens: int = 16  # new tokens per training response (reverse answers: <= 7 chars + EOS)
    temperature: float = 1.0  # training sampling temperature
    lr: float = 3e-4  # AdamW learning rate, constant (opcd's toy default)
    seed: int = 0  # data order / sampling seed
    max_model_len: int = 256  # the toy model's context length (opcd: model.max_model_len)
    # torch threads of the TRL process and of opcd's teacher and learner actors (its 2 rollout engines keep 1
    # each). 1: a 1M-parameter model gains nothing from intra-op threads, and 2 threads on a busy 2-core CPU
    # are dramatically slower (OpenMP oversubscription: TRL's step took 28 s instead of 0.1-1 s at load ~13).
    threads: int = 1
    eval_n_per_rule: int = 100  # evaluator prompts per rule and context kind (test split)
    quick: bool = False  # a handful of steps, small evaluation (plumbing check)
    opcd_overrides: list[str] = field(default_factory=list)  # extra Hydra overrides for the opcd run


def quick_settings(steps: int = 3) -> Settings:
    return Settings(steps=steps, eval_n_per_rule=10, quick=True)


# --------------------------------------------------------------------------------------------------
# Assembly: the opcd command line, its task config (the prompts), the TRL job
# --------------------------------------------------------------------------------------------------
def shared_overrides(s: Settings) -> list[str]:
    """The Hydra overrides of the opcd run that define the shared job (everything but the run dir)."""
    return ["experiment=toy_opcd", "algo=opcd", "task.retain_ratio=0", f"model.path={s.model}",
            f"model.max_model_len={s.max_model_len}", f"steps={s.steps}", f"prompts_per_step={s.prompts_per_step}",
            "rollout.n=1", f"rollout.max_tokens={s.max_tokens}", f"rollout.temperature={s.temperature}",
            "rollout.top_p=1.0", f"algo.lr={s.lr}", "algo.loss=full_reverse_kl", "algo.aggregation=seq_mean",
            "algo.temperature=1.0", "algo.warmup_steps=0", "algo.weight_decay=0.0", "algo.grad_clip=1.0",
            f"seed={s.seed}", f"rollout.seed={s.seed}", f"teacher.threads={s.threads}", f"learner.threads={s.threads}",
            # The in-loop greedy evaluation (start and end) is cut to a few prompts: both sides are
            # scored afterwards by the same evaluator, and TRL pays for no in-loop evaluation.
            "task.eval_n_per_rule=4", "eval_every=0", f"save_every={s.steps}", "keep_checkpoints=0", "logger=none",
            *s.opcd_overrides]


def opcd_command(s: Settings, run_dir: Path, method: str = "opcd") -> list[str]:
    return [sys.executable, "-m", "opcd.train", *shared_overrides(s), *OPCD_VARIANTS[method], f"hydra.run.dir={run_dir}"]


def train_config(s: Settings):
    """The composed ``python -m opcd.train`` config of the opcd run (no Hydra run dir)."""
    from hydra import compose, initialize_config_dir

    from opcd.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=shared_overrides(s))


def training_records(s: Settings) -> list[dict]:
    """The opcd run's training records (``opcd.tasks.load_task`` on its task config): the ``reverse``
    rule's prompts, each with its system-prompt context (one of the rule's paraphrased descriptions)."""
    from opcd.tasks import load_task

    recs = load_task(train_config(s).task).train
    if any(r["metadata"].get("retain") for r in recs):
        raise RuntimeError("retain records in the training set: the benchmark needs task.retain_ratio=0")
    return recs


def trl_job(s: Settings, run_dir: Path, method: str = "trl") -> dict:
    """Everything the TRL worker process needs for TRL configuration ``method`` (JSON-serialisable),
    with the opcd run's prompts and their per-prompt contexts."""
    recs = training_records(s)
    return make_job(method, model=s.model, output_dir=str(run_dir), steps=s.steps, batch=s.prompts_per_step,
                    max_tokens=s.max_tokens, temperature=s.temperature, lr=s.lr, seed=s.seed, save_steps=s.steps,
                    threads=s.threads, max_model_len=s.max_model_len, prompts=[r["prompt"] for r in recs],
                    contexts=[r["context"] for r in recs])


# --------------------------------------------------------------------------------------------------
# Running: training, then the shared evaluator
# --------------------------------------------------------------------------------------------------
def run_method(method: str, s: Settings, work: Path) -> dict:
    """Train one method (a TRL configuration or an opcd variant) with ``benchmarks.common.runs.train_run``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    run_dir = work / method
    trl = is_trl(method)
    rec = train_run(method, run_dir, s.steps, trl_job(s, run_dir, method) if trl else None,
                    None if trl else opcd_command(s, run_dir, method))
    if not rec["checkpoints"]:
        raise RuntimeError(f"{method}: no checkpoint was written; see {run_dir / 'train.log'}")
    return rec


def eval_spec(s: Settings, runs: dict[str, dict]) -> list[dict]:
    """The base model and each method's final checkpoint."""
    return [{"label": "base", "path": s.model}] + [{"label": m, "path": rec["checkpoints"][-1]["path"]}
                                                   for m, rec in runs.items()]


def run_eval_worker(spec_path: str, out_path: str, n_per_rule: int) -> None:
    """``_eval SPEC.json OUT.json N``: ``opcd.eval.run_eval`` (the toy world's vLLM evaluator, configured
    by the toy model card's ``eval_config``) on every model of the spec, with and without the system prompt."""
    from opcd.eval.__main__ import run_eval
    from opcd.models.toy.model_card import eval_config

    out = Path(out_path)
    res = {}
    for m in json.loads(Path(spec_path).read_text()):
        t0 = time.perf_counter()
        cfg = eval_config(m["path"], n_per_rule=n_per_rule, out=str(out.parent / f"eval_{m['label']}.json"),
                          context_kinds=("system", "none"))
        res[m["label"]] = {"path": m["path"], "accuracy": run_eval(cfg)["accuracy"],
                           "seconds": time.perf_counter() - t0}
    out.write_text(json.dumps(res, indent=1))


def run_evaluation(s: Settings, runs: dict[str, dict], work: Path) -> dict:
    spec = eval_spec(s, runs)
    (work / "eval_spec.json").write_text(json.dumps(spec, indent=1))
    print(f"[bench] evaluating {len(spec)} models ({s.eval_n_per_rule} test prompts per rule and condition)",
          flush=True)
    cmd = [sys.executable, "-m", "benchmarks.bench_vs_trl_toy", "_eval", str(work / "eval_spec.json"),
           str(work / "eval.json"), str(s.eval_n_per_rule)]
    rec = run_process(cmd, work / "eval.log")
    res = json.loads((work / "eval.json").read_text())
    res["_wall_s"] = rec["t_end"] - rec["t_start"]
    return res


# --------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 60; quick: 3)")
    ap.add_argument("--batch", type=int, default=None, help="prompts per step, 1 sample each (default 16)")
    ap.add_argument("--lr", type=float, default=None, help="AdamW learning rate, constant (default 3e-4)")
    ap.add_argument("--max-tokens", type=int, default=None, help="new tokens per response (default 16)")
    ap.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1.0)")
    ap.add_argument("--eval-n", type=int, default=None, help="evaluator prompts per rule and condition "
                    "(default 100; quick: 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the TRL process and of opcd's "
                    "teacher and learner (default 1; the toy preset's are 2, much slower on a busy CPU)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"comma list of {', '.join(METHODS)} (trl_vllm: TRL generating with vLLM, colocate mode)")
    ap.add_argument("--quick", action="store_true", help="3-step smoke run, small evaluation, report in the work dir")
    ap.add_argument("--work-dir", default=None, help="runs and checkpoints (default outputs/vs_trl_toy[_quick])")
    ap.add_argument("--out-dir", default=None, help="write vs_trl_toy.json/.md here instead of the defaults")
    return ap.parse_args(argv)


def settings_from_args(args) -> Settings:
    s = quick_settings(args.steps or 3) if args.quick else Settings(steps=args.steps or 60)
    for name, attr in (("batch", "prompts_per_step"), ("lr", "lr"), ("max_tokens", "max_tokens"),
                       ("temperature", "temperature"), ("eval_n", "eval_n_per_rule"), ("threads", "threads")):
        if getattr(args, name) is not None:
            setattr(s, attr, getattr(args, name))
    return s


def output_paths(args, s: Settings, work: Path) -> tuple[Path, Path]:
    if args.out_dir:
        return Path(args.out_dir) / "vs_trl_toy.json", Path(args.out_dir) / "vs_trl_toy.md"
    if s.quick:
        return work / "report" / "vs_trl_toy.json", work / "report" / "vs_trl_toy.md"
    return RESULTS, MARKDOWN


def main(argv=None) -> dict:
    args = parse_args(argv)
    methods = parse_methods(args.methods, METHODS)
    if any(map(is_trl, methods)) and importlib.util.find_spec("trl") is None:
        raise SystemExit("bench_vs_trl_toy: trl is not installed; run: pip install -e '.[bench]'")
    s = settings_from_args(args)
    work = Path(args.work_dir or REPO / "outputs" / ("vs_trl_toy_quick" if s.quick else "vs_trl_toy"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(asdict(s), indent=1))
    t0, load = time.time(), loadavg()  # a busy CPU slows multi-threaded torch a lot: recorded
    runs = {m: run_method(m, s, work) for m in methods}
    evals = run_evaluation(s, runs, work)
    report = build_report(s, runs, evals, {**environment(), "loadavg": load})
    report["eval_wall_s"] = evals.get("_wall_s")
    report["benchmark_wall_s"] = time.time() - t0
    paths = write_outputs(report, *output_paths(args, s, work))
    print(table(report))
    print(f"[bench] wrote {paths['json']} and {paths['md']} in {mmss(time.time() - t0)}")
    return report


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_eval":
        run_eval_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
