"""The SmolLM2 head-to-head's report (``benchmarks/vs_trl_smollm2.py``): from run records and
evaluator results to the JSON report, the targets, the Markdown table and the plot. Pure apart
from writing files: tested on synthetic runs, and the committed Markdown re-renders from its JSON.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from benchmarks.common.plotting import figure
from benchmarks.common.regions import wrap
from benchmarks.common.report import mmss as _mmss
from benchmarks.common.report import num as _num
from benchmarks.common.report import pct as _pct
from benchmarks.common.report import times, write_json
from benchmarks.common.timing import fastest_trl, mean, timing_summary
from benchmarks.common.trl_sdft import LABELS as TRL_LABELS
from benchmarks.common.trl_sdft import configuration_of, is_trl
from benchmarks.common.verdict import Check, Rate, difference, mean_of, rate_interval, verdict
from opcd.eval.sysprompt import harm

LABELS = {**TRL_LABELS, "opcd": "opcd (OPCD)", "opcd_nca": "opcd_nca (OPCD + consistency)"}


def curve(method: str, rec: dict, evals: dict, base_label: str = "base", distill: str = "french") -> list[dict]:
    """French-without-prompt rate at t = 0 (the base model) and at every checkpoint (t = seconds
    since the training process started, when the checkpoint was complete)."""
    pts = [{"step": 0, "t": 0.0, "rate": evals[base_label]["rates"][distill]["without"]}]
    for c in rec["checkpoints"]:
        r = evals.get(f"{method}/step_{c['step']}")
        if r:
            pts.append({"step": c["step"], "t": c["time"] - rec["t_start"], "rate": r["rates"][distill]["without"]})
    return pts


def build_report(s, runs: dict[str, dict], evals: dict, environment: dict | None = None) -> dict:
    """The JSON report: settings, per-method timing / curve / final rates / Harm (and, for TRL, its
    configuration), the TRL configuration opcd is compared with, and the targets."""
    base = evals["base"]["rates"]
    report = {"settings": asdict(s), "environment": environment or {}, "base": {"rates": base}, "methods": {}}
    for m, rec in runs.items():
        final_label = f"{m}/step_{rec['checkpoints'][-1]['step']}" if rec["checkpoints"] else None
        final = evals.get(final_label, {}).get("rates") if final_label else None
        report["methods"][m] = {"timing": timing_summary(m, rec), "curve": curve(m, rec, evals, distill=s.distill),
                                "final": final, "harm": harm(base, final) if final else None,
                                "checkpoints": rec["checkpoints"], "reused": bool(rec.get("reused"))}
        if is_trl(m):
            report["methods"][m]["trl_config"] = configuration_of(m, rec)
    report["trl_reference"] = fastest_trl(report["methods"])
    report["targets"] = targets(report, s)
    return report


def _rate(p) -> float | None:
    return p["rate"] if p and p.get("rate") is not None else None


def targets(report: dict, s) -> dict:
    """The issue's targets, each ``{"value", "met"}`` (met None when a needed method is missing),
    against the faster TRL configuration that ran (``report["trl_reference"]``)."""
    ms, out = report["methods"], {}
    teacher = _rate(report["base"]["rates"][s.distill]["with"])
    ref = report.get("trl_reference", fastest_trl(ms))
    trl = ms.get(ref) if ref else None
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
            return mean(h[o]["with"]["diff"] for o in s.others if o in h and "with" in h[o])
        a, b = drop(ms["opcd_nca"]["harm"]), drop(trl["harm"])
        out["opcd_nca: other prompts' with-prompt rates drop less than under TRL"] = {
            "value": a, "trl": b, "met": None if a is None or b is None else a < b}
    return out


def prompt_rate(report: dict, p: dict) -> Rate:
    """A rate of this report with its 95% interval over prompts (``benchmarks.common.verdict``)."""
    return rate_interval(p, report["settings"]["eval"]["prompts"])


def _pct_rate(r: Rate) -> str:
    return f"{100 * r.rate:.1f}% [{100 * r.lo:.1f}, {100 * r.hi:.1f}]"


def _points(r: Rate) -> str:
    return f"{100 * r.rate:+.1f} points [{100 * r.lo:+.1f}, {100 * r.hi:+.1f}]"


def checks(report: dict) -> list[Check]:
    """Issue #9's targets as they were set, each with its verdict under the rule of ``benchmarks/README.md``
    ("When a target is met"): rates by their interval over prompts, step-rate ratios by >= 3 runs."""
    s, ms = report["settings"], report["methods"]
    ref = report.get("trl_reference") or fastest_trl(ms)
    if not ref or ref not in ms:
        return []
    trl, vs = ms[ref], LABELS.get(ref, ref)
    teacher = prompt_rate(report, report["base"]["rates"][s["distill"]]["with"])
    trl_curve = [p for p in trl["curve"] if p["step"] > 0]
    trl_final, trl_best = (prompt_rate(report, trl_curve[-1]["rate"]),
                           max((prompt_rate(report, p["rate"]) for p in trl_curve), key=lambda r: r.rate))
    out = []
    for m in (m for m in ("opcd", "opcd_nca") if m in ms):
        r = ms[m]
        speed = [trl["timing"]["s_per_step"] / r["timing"]["s_per_step"]]
        out.append(Check(f"{m}: steps/s vs {vs}", "≥ 2×", times(speed[0]), verdict("ratio", speed, ">= 2", times)))
        within = [p for p in r["curve"] if p["step"] > 0 and p["t"] <= trl["timing"]["wall_s"]]
        if not within:
            continue
        best = max((prompt_rate(report, p["rate"]) for p in within), key=lambda x: x.rate)
        gap = difference(best, teacher)
        out.append(Check(f"{m}: French without the prompt, best checkpoint within {vs}'s wall time, vs the "
                         f"teacher (base model with the prompt, {_pct(teacher.rate)})", "≥ the teacher's rate",
                         _points(gap), verdict("rate", (gap.lo, gap.hi), ">= 0"),
                         "the best of several checkpoints is biased upwards"))
        final = prompt_rate(report, r["curve"][-1]["rate"])
        beat, same_final = difference(best, trl_final), difference(final, trl_final)
        best_best = difference(max((prompt_rate(report, p["rate"]) for p in r["curve"] if p["step"] > 0),
                                   key=lambda x: x.rate), trl_best)
        out.append(Check(f"{m}: ... and beats {vs}'s final rate ({_pct(trl_final.rate)})", "> TRL's final rate",
                         _points(beat), verdict("rate", (beat.lo, beat.hi), "> 0"),
                         f"the target compares {m}'s best checkpoint with TRL's final one; like for like, final vs "
                         f"final {_points(same_final)} ({verdict('rate', (same_final.lo, same_final.hi), '> 0').label}), "
                         f"best vs best {_points(best_best)} ({verdict('rate', (best_best.lo, best_best.hi), '> 0').label})"))
    if "opcd_nca" in ms and ms["opcd_nca"]["final"] and trl["final"]:
        others = [o for o in s["others"] if o in ms["opcd_nca"]["final"] and o in trl["final"]]
        d = mean_of([difference(prompt_rate(report, ms["opcd_nca"]["final"][o]["with"]),
                                prompt_rate(report, trl["final"][o]["with"])) for o in others])
        out.append(Check(f"opcd_nca: the other system prompts' with-prompt rates ({', '.join(others)}) drop less "
                         f"than under {vs}", "opcd_nca's rates − TRL's > 0", _points(d), verdict("rate", (d.lo, d.hi), "> 0")))
    return out


def _notes(report: dict) -> list[str]:
    lines = []
    reused = [LABELS.get(m, m) for m, r in report["methods"].items() if r.get("reused")]
    if reused:
        lines.append(f"- Reused from an earlier invocation with the same settings on the same machine (`--reuse`): "
                     f"{', '.join(reused)}; the other runs were trained by this one.")
    lines.append("- TRL runs `trl.experimental.sdft.SDFTTrainer` with HF `generate`; its context builder is "
                 "subclassed so the context is the *system message* (stock SDFT appends it to the user turn via "
                 "`teacher_prompt_template`). Teacher and student prompts are then byte-identical to opcd's.")
    if "trl_vllm" in report["methods"]:
        cfg = report["methods"]["trl_vllm"].get("trl_config", {})
        lines.append(f"- {LABELS['trl_vllm']}: the same SDFTTrainer job generating with vLLM "
                     f"(`use_vllm=True`, `vllm_mode=\"colocate\"`, vLLM {cfg.get('vllm', '?')}); its weights are "
                     "reloaded from the trained model before each step (the sync column).")
    ref, n_trl = report.get("trl_reference"), sum(map(is_trl, report["methods"]))
    if ref and n_trl > 1:
        lines.append(f"- The targets compare opcd with the faster TRL configuration: {LABELS.get(ref, ref)}.")
    lines += ["- opcd runs `python -m opcd.train experiment=smollm2_french` (Ray: 1 vLLM rollout engine, teacher actor, "
              "DeepSpeed learner; weights pushed into the engine after every step). Its in-loop greedy evaluation is "
              "cut to 4 prompts per condition (it runs at the start and the end and is part of its wall time).",
              "- Both write resumable checkpoints (weights + optimizer) every ceil(steps/4) steps; their time is in "
              "the wall time. s/step excludes checkpoint writes for both.",
              "- Wall time starts when the training process is launched (imports, model loading, actor start-up included).",
              ]
    return lines


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
        f"every model; rates with 95% intervals over prompts ({prompt_rate(report, base[s['distill']]['with']).how}). "
        "One run per method.",
        "",
        "| method | s/step | rollout tok/s | teacher tok/s | learner tok/s | wall time (start-up) | "
        + " | ".join(f"{n} w/o prompt | {n} with prompt" for n in names) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|---:|" * len(names),
    ]
    row = ["base model (before training)", "–", "–", "–", "–", "–"]
    row += [c for n in names for c in (_fmt_rate(report, base[n]["without"]), _fmt_rate(report, base[n]["with"]))]
    lines.append("| " + " | ".join(row) + " |")
    for m, r in report["methods"].items():
        t, f = r["timing"], r["final"] or {}
        ph = t["phases"]
        row = [LABELS.get(m, m), _num(t["s_per_step"]), _num(ph["rollout"]["tokens_per_s"], "{:.0f}"),
               _num(ph["teacher"]["tokens_per_s"], "{:.0f}"), _num(ph["learner"]["tokens_per_s"], "{:.0f}"),
               f"{_mmss(t['wall_s'])} ({_mmss(t['startup_s'])})"]
        row += [c for n in names for c in (_fmt_rate(report, f.get(n, {}).get("without")),
                                           _fmt_rate(report, f.get(n, {}).get("with")))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Per-phase seconds per step (mean over steps 2..N):", "",
              "| method | rollout | teacher | learner | weight sync | whole step |", "|---|---:|---:|---:|---:|---:|"]
    for m, r in report["methods"].items():
        ph, t = r["timing"]["phases"], r["timing"]
        lines.append(f"| {LABELS.get(m, m)} | {_num(ph['rollout']['s_per_step'])} | {_num(ph['teacher']['s_per_step'])} | "
                     f"{_num(ph['learner']['s_per_step'])} | {_num(ph.get('sync', {}).get('s_per_step'))} | "
                     f"{_num(t['s_per_step'])} |")
    lines += ["", "Harm: drop of each system prompt's with-prompt rate from the base model to the final model "
              "(points, 95% interval from the intervals over prompts, unpaired: conservative; positive = worse):", "",
              "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m, r in report["methods"].items():
        f = r["final"] or {}
        cells = []
        for n in names:
            a, b = base.get(n, {}).get("with"), f.get(n, {}).get("with")
            if not a or not b or a.get("rate") is None or b.get("rate") is None:
                cells.append("–")
                continue
            d = difference(prompt_rate(report, a), prompt_rate(report, b))
            cells.append(f"{100 * d.rate:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines += ["", "French rate without the system prompt at each checkpoint (t = since the process started):", ""]
    for m, r in report["methods"].items():
        pts = ", ".join(f"step {p['step']} @ {_mmss(p['t'])}: {_pct(_rate(p['rate']))}" for p in r["curve"])
        lines.append(f"- {LABELS.get(m, m)}: {pts}")
    lines += ["", "Targets (issue #9), under the rule of `benchmarks/README.md` (\"When a target is met\"):", ""]
    for c in checks(report):
        lines.append(f"- {c.benchmark}; target {c.target}: {c.measured}: **{c.verdict.label}**"
                     + (f" ({c.note})" if c.note else ""))
    lines += ["", "Notes:", "", *_notes(report)]
    return "\n".join(lines) + "\n"


def _fmt_rate(report: dict, p: dict | None) -> str:
    """``"38.3% [26.5, 51.7]"``: percent with the 95% interval over prompts."""
    if not p or p.get("rate") is None:
        return "–"
    return _pct_rate(prompt_rate(report, p))


def plot(report: dict, path: Path) -> None:
    """French rate without the system prompt vs wall-clock minutes, one curve per method."""
    s = report["settings"]
    with figure(path, figsize=(7, 4.2)) as (fig, ax):
        for m, r in report["methods"].items():
            pts = [p for p in r["curve"] if p["rate"] and p["rate"].get("rate") is not None]
            x = [p["t"] / 60 for p in pts]
            iv = [prompt_rate(report, p["rate"]) for p in pts]  # 95% intervals over prompts
            y = [100 * r.rate for r in iv]
            err = [[100 * (r.rate - r.lo) for r in iv], [100 * (r.hi - r.rate) for r in iv]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=LABELS.get(m, m))
        teacher = _rate(report["base"]["rates"][s["distill"]]["with"])
        if teacher is not None:
            ax.axhline(100 * teacher, ls="--", c="gray", lw=1, label="teacher (base model with the prompt)")
        for m in (m for m in report["methods"] if is_trl(m)):
            ax.axvline(report["methods"][m]["timing"]["wall_s"] / 60, ls=":", c="gray", lw=1,
                       label=f"{'TRL' if m == 'trl' else LABELS[m]}'s {s['steps']}-step wall time")
        ax.set_xlabel("wall-clock time since the training process started (min)")
        ax.set_ylabel("French replies without the system prompt (%)")
        ax.set_title(f"System-prompt distillation, {Path(s['model']).name}" + (" (quick)" if s["quick"] else ""))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def write_outputs(report: dict, out_dir: Path, json_path: Path | None = None, png: bool = True) -> dict[str, Path]:
    """Write the Markdown table, the PNG (unless ``png=False``) and the raw JSON; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "vs_trl_smollm2.md", "png": out_dir / "vs_trl_smollm2.png",
             "json": json_path or out_dir / "results" / "vs_trl_smollm2.json"}
    write_json(paths["json"], report)
    paths["md"].write_text(wrap("vs_trl_smollm2_md", markdown(report)))
    if png:
        plot(report, paths["png"])
    else:
        del paths["png"]
    return paths
