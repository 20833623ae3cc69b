"""Reproduction report: every method on one experiment, same budget and seed, one table and plots.

    python benchmarks/reproduce.py                         # toy world (experiment=toy_opcd)
    python benchmarks/reproduce.py --steps 60 --algos opcd,offpolicy_cd,icl
    python benchmarks/reproduce.py --experiment smollm2_french --steps 95 --name smollm2   # the real model
    python benchmarks/reproduce.py --from-dir multirun/<dir>   # re-report a finished sweep

It runs ``python -m opcd.train -m algo=<a> algo.loss=<a's own loss>`` for every method (one Hydra job
each: the same experiment, steps, seed and evaluation), reads each job's ``metrics.jsonl`` and writes
``benchmarks/reproduction_<name>.md`` (a table: method x Acc_x, Acc_{x,c}, Harm, Δlen, OOD accuracy,
teacher-student KL, wall time; and the paper's targets judged by the one rule of
``benchmarks/README.md``, as the rendered region ``reproduction <name>``), ``reproduction_<name>.png``
(accuracy over steps per method, without and with the context) and ``results/reproduction_<name>.json``.

Column definitions (``opcd.eval.metrics``, on the distilled behaviour's test prompts):
Acc_x = ``eval/distilled/none``; Acc_{x,c} = ``eval/distilled/system``; Harm = P(wrong with the
context | right without); Δlen = relative response-length change when the context is added;
OOD = the distilled behaviour with a held-out wording of its context (``system_heldout``, toy world)
and the other behaviours with their contexts (``eval/other/system``); on the real model also factual
questions unrelated to the system prompt, asked without one (``eval/ood/none``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # `python benchmarks/reproduce.py`: the repo root on the path for `benchmarks.common`
    sys.path.insert(0, str(ROOT))

from benchmarks.common.plotting import figure  # noqa: E402

ALGOS = ["icl", "opcd", "opcd_nca", "offpolicy_cd", "sft", "gkd"]
COLUMNS = [  # (header, metrics.jsonl key)
    ("Acc_x", "eval/distilled/none"), ("Acc_x,c", "eval/distilled/system"),
    ("Harm", "eval/distilled/harm_system"), ("Δlen", "eval/distilled/delta_len_system"),
    ("OOD: held-out wording", "eval/distilled/system_heldout"), ("OOD: other behaviours", "eval/other/system"),
    ("OOD: unrelated facts", "eval/ood/none"),
    ("KL(student‖teacher)", "eval/agreement_kl"),
]


def own_loss(algo: str) -> str:
    """The loss that defines ``algo``: ``algo.loss`` of the train config composed with ``algo=<algo>``
    and no experiment preset (Hydra resolves the algo group's defaults)."""
    from hydra import compose, initialize_config_dir

    from opcd.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"algo={algo}"]).algo.loss


def run_sweep(experiment: str, algos: list[str], steps: int, seed: int, sweep_dir: Path, extra: list[str]) -> None:
    """One ``python -m opcd.train -m`` job per method under ``sweep_dir/<algo>``. Each method keeps the
    loss that defines it: an experiment preset may set ``algo.loss`` for its own method (the SmolLM2
    preset sets opcd's full-vocabulary reverse KL), which must not turn ``sft`` into a KL method."""
    user_loss = any(o.startswith("algo.loss=") for o in extra)  # the user's choice wins
    for algo in algos:
        loss = [] if user_loss else [f"algo.loss={own_loss(algo)}"]
        cmd = [sys.executable, "-m", "opcd.train", "-m", f"experiment={experiment}", f"algo={algo}", *loss,
               f"steps={steps}", f"seed={seed}", "logger=none", f"hydra.sweep.dir={sweep_dir}",
               "hydra.sweep.subdir=${algo.name}", *extra]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


def load_runs(sweep_dir: Path) -> dict[str, list[dict]]:
    """``{algo: metrics rows}`` for every finished job directory of the sweep."""
    runs = {}
    order = {a: i for i, a in enumerate(ALGOS)}  # table rows in the canonical method order
    for job in sorted((p for p in sweep_dir.iterdir() if (p / "metrics.jsonl").exists()),
                      key=lambda p: (order.get(p.name, len(order)), p.name)):
        rows = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines() if x.strip()]
        runs[job.name] = rows
    return runs


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Final values of the table's columns per method, plus wall time (s) and steps."""
    out = {}
    for algo, rows in runs.items():
        evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
        final = evals[-1] if evals else {}
        out[algo] = {key: final.get(key) for _, key in COLUMNS}
        out[algo]["steps"] = rows[-1]["step"] if rows else 0
        out[algo]["wall_s"] = rows[-1].get("time/elapsed_s") if rows else None
    return out


def check_targets(summary: dict[str, dict]) -> list[tuple[str, bool | None, str]]:
    """The issue's toy-world targets: (statement, met?, the numbers). None = a method is missing."""
    def get(algo, key):
        return summary.get(algo, {}).get(key)

    acc, acc_c, harm = "eval/distilled/none", "eval/distilled/system", "eval/distilled/harm_system"
    ood = "eval/other/system"  # held-out rules; the held-out wording is reported but stays near chance for all
    checks = []

    def add(text, a, b, ok):
        if a is None or b is None:
            checks.append((text, None, "missing"))
        else:
            checks.append((text, ok(a, b), f"{a:.3f} vs {b:.3f}"))

    add("OPCD Acc_x ≥ off-policy CD Acc_x", get("opcd", acc), get("offpolicy_cd", acc), lambda a, b: a >= b)
    icl = get("icl", acc_c)
    add("OPCD Acc_x ≥ 80% of the ICL teacher's accuracy", get("opcd", acc), None if icl is None else 0.8 * icl,
        lambda a, b: a >= b)
    add("OPCD OOD accuracy (other rules, with their contexts) ≥ off-policy CD's", get("opcd", ood),
        get("offpolicy_cd", ood), lambda a, b: a >= b)
    add("opcd_nca Harm < opcd Harm", get("opcd_nca", harm), get("opcd", harm), lambda a, b: a < b)
    return checks


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _counts(summary: dict[str, dict], key: str) -> int | None:
    """Prompts behind ``key``'s rates: the smallest n that makes every method's rate a count
    (``benchmarks.common.verdict.infer_n``; the run's true n is a multiple, so intervals are conservative)."""
    from benchmarks.common.verdict import infer_n

    return infer_n([s.get(key) for s in summary.values() if s.get(key) is not None])


def checks(data: dict) -> list:
    """The paper's targets (``check_targets``) restated under the one rule of ``benchmarks/README.md``:
    each is a difference of two rates whose 95% interval decides met / within noise / missed.
    ``[]`` entries are skipped when a method is missing."""
    from benchmarks.common.verdict import Check, difference, rate_of, verdict

    sm = data["summary"]
    acc, acc_c, harm, ood = ("eval/distilled/none", "eval/distilled/system", "eval/distilled/harm_system",
                             "eval/other/system")

    def rate(algo, key):
        v, n = sm.get(algo, {}).get(key), _counts(sm, key)
        return None if v is None or not n else rate_of(v, n)

    def harm_rate(algo):  # P(wrong with | right without): over the prompts right without the context
        v, a, n = sm.get(algo, {}).get(harm), sm.get(algo, {}).get(acc), _counts(sm, acc)
        return None if v is None or a is None or not n else rate_of(v, round(a * n))

    out = []
    for text, a, b, c, target in [
            ("OPCD Acc_x ≥ off-policy CD Acc_x", rate("opcd", acc), rate("offpolicy_cd", acc), 1.0, ">= 0"),
            ("OPCD Acc_x ≥ 80% of the ICL teacher's accuracy", rate("opcd", acc), rate("icl", acc_c), 0.8, ">= 0"),
            ("OPCD OOD accuracy (other behaviours, with their contexts) ≥ off-policy CD's", rate("opcd", ood),
             rate("offpolicy_cd", ood), 1.0, ">= 0"),
            ("opcd_nca Harm < opcd Harm", harm_rate("opcd_nca"), harm_rate("opcd"), 1.0, "< 0")]:
        if a is None or b is None:
            continue
        d = difference(a, b, c)
        out.append(Check(text, f"difference {target.replace('>=', '≥')}",
                         f"{a.rate:.3f} vs {c * b.rate:.3f}: difference {100 * d.rate:+.1f} points "
                         f"[{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]", verdict("rate", (d.lo, d.hi), target)))
    return out


def markdown(data: dict) -> str:
    """The report's generated part (title, table, targets) from its JSON (``results/reproduction_<name>.json``)."""
    summary = data["summary"]
    cols = [(h, k) for h, k in COLUMNS if any(k in s for s in summary.values())]  # older runs lack newer columns
    head = ["method", *[h for h, _ in cols], "steps", "wall time"]
    lines = [f"# Reproduction report: `{data['experiment']}`", "",
             "Generated by `python benchmarks/reproduce.py` (see its docstring for the column definitions); "
             "one seed, the same budget for every method. `icl` is the model with its context, untrained.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo, s in summary.items():
        wall = s["wall_s"]
        lines.append("| " + " | ".join([f"`{algo}`", *[_fmt(s.get(k)) for _, k in cols], str(s["steps"]),
                                         "—" if wall is None else f"{wall / 60:.1f} min"]) + " |")
    ns = {h: _counts(summary, k) for h, k in COLUMNS[:2] + COLUMNS[5:6]}
    lines += ["", "One run per method; wall times include start-up and evaluations (machine not recorded in the JSON). "
              "Prompts behind each rate, inferred as the smallest count that makes every rate whole (the true "
              "number is a multiple, so the intervals below are conservative): "
              + ", ".join(f"{h} {n}" for h, n in ns.items() if n) + ".", "",
              "Targets (the paper's), under the rule of `benchmarks/README.md` (\"When a target is met\"): "
              "95% interval of the difference of two rates, unpaired (conservative: both methods answer the "
              "same prompts).", ""]
    lines += [f"- **{c.verdict.label}**: {c.benchmark} ({c.measured})" for c in checks(data)]
    return "\n".join(lines)


def report_data(experiment: str, summary: dict, checks_: list, runs: dict) -> dict:
    """The JSON report: summary, the point-value checks of ``check_targets``, and the eval curves."""
    return {"experiment": experiment, "summary": summary,
            "targets": [{"target": t, "met": ok, "values": n} for t, ok, n in checks_],
            "curves": {a: [{k: v for k, v in r.items() if k.startswith("eval/") or k == "step"} for r in rows]
                       for a, rows in runs.items()}}


def write_report(name: str, experiment: str, summary: dict, checks_: list, runs: dict, out_dir: Path,
                 notes: str = "") -> Path:
    """Write ``reproduction_<name>.md`` (the generated part as the rendered region ``reproduction <name>``,
    then ``notes``), its plot and ``results/reproduction_<name>.json``."""
    from benchmarks.common.regions import wrap

    data = report_data(experiment, summary, checks_, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"reproduction_{name}.md"
    md.write_text(wrap("reproduction", markdown(data), arg=name) + (f"\n{notes}\n" if notes else ""))
    _plot(runs, out_dir / f"reproduction_{name}.png")
    res = out_dir / "results" / f"reproduction_{name}.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(data, indent=1))
    return md


def _plot(runs: dict[str, list[dict]], path: Path) -> None:
    with figure(path, 1, 2, figsize=(11, 4), sharey=True) as (fig, axes):
        for ax, (key, title) in zip(axes, [("eval/distilled/none", "without the context (Acc_x)"),
                                           ("eval/distilled/system", "with the context (Acc_x,c)")]):
            for algo, rows in runs.items():
                pts = [(r["step"], r[key]) for r in rows if key in r]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=algo)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy")
        axes[1].legend()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="toy_opcd", help="conf/experiment preset every method runs")
    ap.add_argument("--algos", default=",".join(ALGOS), help="comma-separated algo configs")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per method (the shared budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="toy", help="report name: reproduction_<name>.md/.png")
    ap.add_argument("--from-dir", type=Path, help="report an existing sweep directory instead of running one")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--notes", default="", help="Markdown appended to the report (findings)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = ap.parse_args(argv)
    sweep = args.from_dir or ROOT / "multirun" / f"reproduce_{args.name}_{time.strftime('%Y%m%d_%H%M%S')}"
    if args.from_dir is None:
        run_sweep(args.experiment, args.algos.split(","), args.steps, args.seed, sweep, args.overrides)
    runs = load_runs(sweep)
    if not runs:
        sys.exit(f"no finished jobs under {sweep}")
    summary = summarise(runs)
    md = write_report(args.name, args.experiment, summary, check_targets(summary), runs, args.out_dir, args.notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
