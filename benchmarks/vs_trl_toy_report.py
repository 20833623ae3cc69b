"""The toy head-to-head's report (``benchmarks/bench_vs_trl_toy.py``): from run records and
evaluator tables to the JSON report and its Markdown section. Pure apart from writing files: tested
on synthetic runs, and the committed Markdown re-renders from its JSON.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

from benchmarks.common.regions import wrap
from benchmarks.common.report import mmss, num, pct, write_json
from benchmarks.common.timing import fastest_trl, steady, timing_summary
from benchmarks.common.trl_sdft import LABELS as TRL_LABELS
from benchmarks.common.trl_sdft import configuration_of, is_trl

DISTILLED = "reverse"  # the toy_opcd experiment's distilled rule
LABELS = {**TRL_LABELS, "opcd": "opcd (OPCD)", "opcd_overlap": "opcd, rollout.overlap=true (one-step off-policy)",
          "base": "base model (before training)"}


def step_series(method: str, rec: dict) -> tuple[list[float], list[float]]:
    """Per-step wall seconds and response tokens of one run record (TRL: timing.jsonl rows; opcd:
    metrics.jsonl rows, ``step/seconds`` and ``rollout/response_len`` x prompts per step)."""
    if is_trl(method):
        rows = [r for r in rec["rows"] if r.get("event") == "step"]
        return [r["seconds"] for r in rows], [float(r.get("rollout_tokens", 0)) for r in rows]
    rows = [r for r in rec["rows"] if r.get("step", 0) >= 1 and "step/seconds" in r]
    n = rec["prompts_per_step"]
    return [r["step/seconds"] for r in rows], [r["rollout/response_len"] * n for r in rows]


def timing(method: str, rec: dict) -> dict:
    """Median s/step (every step), response tokens/s (steps 2..N: the first is warm-up), and the
    per-phase breakdown of ``benchmarks.common.timing.timing_summary``."""
    secs, toks = step_series(method, rec)
    ss, st = steady(secs), steady(toks)
    out = {"steps": len(secs), "median_s_per_step": statistics.median(secs) if secs else None,
           "tokens_per_s": sum(st) / sum(ss) if ss and sum(ss) > 0 else None,
           "mean_response_tokens": sum(toks) / len(toks) / rec["prompts_per_step"] if toks else None,
           "train_s": sum(secs), "wall_s": rec["t_end"] - rec["t_start"]}
    try:
        full = timing_summary(method, rec)
        out.update(mean_s_per_step=full["s_per_step"], startup_s=full["startup_s"], phases=full["phases"])
    except (KeyError, TypeError, ZeroDivisionError):  # synthetic or partial rows
        pass
    return out


def accuracies(acc: dict, distilled: str = DISTILLED) -> dict:
    """The numbers of one evaluator table: the distilled rule without / with its system prompt, and
    the other rules with theirs (mean; what distillation without retain prompts may break)."""
    others = [r for r in acc if r not in (distilled, "mean") and "system" in acc[r]]
    return {"distilled_none": acc.get(distilled, {}).get("none"),
            "distilled_system": acc.get(distilled, {}).get("system"),
            "others_system": sum(acc[r]["system"] for r in others) / len(others) if others else None}


def build_report(s, runs: dict[str, dict], evals: dict, environment: dict | None = None) -> dict:
    """The JSON report: settings, the base model's and each method's timing and accuracies (TRL:
    with its configuration), and the step-rate ratios against the faster TRL configuration."""
    report = {"settings": asdict(s), "environment": environment or {}, "distilled_rule": DISTILLED,
              "base": None, "methods": {}}
    if "base" in evals:
        report["base"] = {"accuracy": evals["base"]["accuracy"], **accuracies(evals["base"]["accuracy"])}
    for m, rec in runs.items():
        ev = evals.get(m)
        report["methods"][m] = {
            "timing": timing(m, {**rec, "prompts_per_step": s.prompts_per_step}),
            "final_checkpoint": rec["checkpoints"][-1] if rec.get("checkpoints") else None,
            "accuracy": ev["accuracy"] if ev else None, **(accuracies(ev["accuracy"]) if ev else {})}
        if is_trl(m):
            report["methods"][m]["trl_config"] = configuration_of(m, rec)
    ref = fastest_trl(report["methods"], "median_s_per_step")
    t = report["methods"].get(ref) if ref else None
    speedups = {m: t["timing"]["median_s_per_step"] / o["timing"]["median_s_per_step"]
                for m, o in report["methods"].items()
                if not is_trl(m) and t and t["timing"]["median_s_per_step"] and o["timing"]["median_s_per_step"]}
    if ref:
        report["trl_reference"] = ref
    if speedups:
        report["speedup_vs_trl"] = speedups
    if "opcd" in speedups:
        report["opcd_speedup_vs_trl"] = speedups["opcd"]
    return report


def table(report: dict) -> str:
    """The result table (Markdown)."""
    s = report["settings"]
    lines = ["| method | s/step (median) | tokens/s | final Acc_x no context (`reverse`) | `reverse` with context | "
             "other rules with context | steps | wall time (start-up) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    if report.get("base"):
        b = report["base"]
        lines.append(f"| {LABELS['base']} | – | – | {pct(b['distilled_none'])} | {pct(b['distilled_system'])} | "
                     f"{pct(b['others_system'])} | 0 | – |")
    for m, r in report["methods"].items():
        t = r["timing"]
        lines.append(f"| {LABELS.get(m, m)} | {num(t['median_s_per_step'])} | {num(t['tokens_per_s'], '{:.0f}')} | "
                     f"{pct(r.get('distilled_none'))} | {pct(r.get('distilled_system'))} | "
                     f"{pct(r.get('others_system'))} | {t['steps']} / {s['steps']} | "
                     f"{mmss(t.get('wall_s'))} ({mmss(t.get('startup_s'))}) |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """A short Markdown section: what was run, the table, the settings."""
    s, env = report["settings"], report["environment"]
    quick = " (--quick smoke run: numbers meaningless)" if s["quick"] else ""
    speed = report.get("speedup_vs_trl", {})
    ref = report.get("trl_reference", "trl")
    vs = "TRL" if ref == "trl" else LABELS.get(ref, ref)
    lines = [
        f"### End to end against TRL on the toy model{quick}", "",
        f"`python benchmarks/bench_vs_trl_toy.py{' --quick' if s['quick'] else ''}` "
        f"({env.get('date', '')}, {env.get('cpu', '')}, load average {num(env.get('loadavg'), '{:.1f}')} at the "
        f"start; trl {env.get('packages', {}).get('trl', '?')}). "
        f"Both sides distil the toy world's `{report['distilled_rule']}` rule description (system message) into the "
        f"shipped 1M-parameter character-level Llama `{Path(s['model']).name}`: the same training prompts "
        f"(`load_task` of `experiment=toy_opcd` with `task.retain_ratio=0`), {s['steps']} steps of "
        f"{s['prompts_per_step']} prompts x 1 sample, {s['max_tokens']} new tokens at T={s['temperature']:g}, "
        "full-vocabulary reverse KL(student || teacher) (per-response mean, then batch mean), frozen initial "
        f"model as teacher, AdamW lr {s['lr']:g} constant, grad clip 1.0, seed {s['seed']}.",
        "",
        table(report),
        "",
        "- TRL: `trl.experimental.sdft.SDFTTrainer` (`distillation_mode=\"full_logits\"`, `distillation_alpha=1.0`, "
        "`teacher_model_kind=\"base\"`, HF `generate`, one process with "
        f"{s['threads']} torch thread(s)), context builder subclassed so the context is the system message, "
        "byte-identical to opcd's rendering (`benchmarks/vs_trl_smollm2.py`).",
    ]
    if "trl_vllm" in report["methods"]:
        cfg = report["methods"]["trl_vllm"].get("trl_config", {})
        lines.append(f"- {LABELS['trl_vllm']}: the same job generating with vLLM (`use_vllm=True`, "
                     f"`vllm_mode=\"colocate\"`, vLLM {cfg.get('vllm', '?')}), weights reloaded into the engine "
                     "before each step.")
    lines += [
        "- opcd: `python -m opcd.train experiment=toy_opcd algo=opcd task.retain_ratio=0 algo.loss=full_reverse_kl "
        f"algo.aggregation=seq_mean teacher.threads={s['threads']} learner.threads={s['threads']} ...` (Ray: 2 vLLM-CPU "
        "rollout engines with 1 thread each, teacher actor, DeepSpeed learner; weights pushed into the engines "
        "after every step).",
        "- s/step: median wall time of a training step (rollout + teacher + update, and for opcd the weight sync; "
        "checkpoint writes and opcd's in-loop evaluation excluded). tokens/s: sampled response tokens (EOS "
        "included) per second of step time, steps 2..N. Wall time: the training process from launch to exit "
        "(imports, model loading, opcd's actor start-up and in-loop evaluation, checkpoint writes); start-up: "
        "until the first step began. Torch threads: --threads (TRL's process, opcd's teacher and learner); "
        "multi-threaded torch on a busy CPU is many times slower, hence the load average above."
        + "".join(f" Step rate {m} / {vs} (median s/step, one run): {v:.2f}×." for m, v in speed.items()),
        "- `opcd_overlap`: the same run with `rollout.overlap=true`: the rollout and teacher scoring of step t+1 "
        "run in a background thread while the learner trains on step t, so each batch is sampled from the "
        "weights one update behind (one-step off-policy).",
        "- Accuracy: the same evaluator for every model (`opcd.eval.run_eval`, `model_card.eval_config`: toy-world "
        f"test split, {s['eval_n_per_rule']} prompts per rule and condition, greedy, exact match) on each side's "
        "final saved checkpoint. Acc_x no context = the distilled rule without its description; \"other rules "
        "with context\" = mean over the 7 other rules with their description (no retain prompts protect them here).",
        "- `task.retain_ratio=0` on the opcd side: the default toy experiment also trains on retain prompts "
        "(other rules, context visible to the student); SDFT has no such notion, so both train on the "
        "distilled rule's prompts only. Data order differs (each trainer shuffles with its own RNG).",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict, json_path: Path, md_path: Path) -> dict[str, Path]:
    write_json(json_path, report)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(wrap("vs_trl_toy_md", markdown(report)))
    return {"json": json_path, "md": md_path}
