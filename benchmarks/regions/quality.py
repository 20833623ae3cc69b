"""Regions of the quality results: the reproduction reports (``reproduction_<name>.json``), experience
from a real model (``experience_smollm2.json``) and the quickstart's default run (``quickstart.json``).

``quickstart.json`` (written by ``python -m benchmarks.record_quickstart``) holds::

    {"machine": "<cores, CPU model, ...>", "date": "YYYY-MM-DD", "steps": 200, "eval_prompts_per_rule": 64,
     "runs": [{"fresh_clone": true, "wall_s": ..., "setup_s": ...,
               "distilled_none_before": ..., "distilled_none_after": ...,
               "distilled_system_before": ..., "distilled_system_after": ..., "harm_after": ...,
               "others_system_before": ..., "others_system_after": ...}, ...],
     "tests": [{"fresh_clone": true, "wall_s": ..., "setup_s": ..., "passed": ..., "failed": ..., "skipped": ...}]}

``runs``: one entry per run of ``bash launch/quickstart.sh`` (command 1; ``fresh_clone`` false for a
run with the environment already set up, ``setup_s`` 0 then); ``tests`` (optional): runs of
``bash launch/test.sh`` (command 2). Every figure is rendered as a range over the runs.
"""
from __future__ import annotations

from benchmarks import reproduce
from benchmarks.common.regions import region
from benchmarks.common.report import mmss, pct, runs as n_runs, span

NOT_YET = "not measured yet"


@region("reproduction", "reproduction_{arg}.json")
def reproduction(data: dict, arg: str) -> str:
    return reproduce.markdown(data)


def _final(data: dict, algo: str, key: str):
    """The last evaluated value of ``key`` in ``algo``'s curve."""
    vals = [r[key] for r in data["curves"].get(algo, []) if key in r]
    return vals[-1] if vals else None


def _at(data: dict, algo: str, key: str, step: int):
    return next((r[key] for r in data["curves"].get(algo, []) if r.get("step") == step and key in r), None)


def _verdicts(data: dict) -> str:
    return "; ".join(f"{c.benchmark}: {c.verdict.label}" for c in reproduce.checks(data))


ACC, ACC_C, HARM, OOD = "eval/distilled/none", "eval/distilled/system", "eval/distilled/harm_system", "eval/other/system"
TRAINED = ("opcd", "opcd_nca", "offpolicy_cd", "sft", "gkd")


@region("reproduction_toy_summary", "reproduction_toy.json")
def reproduction_toy_summary(d: dict) -> str:
    sm = d["summary"]
    steps = sm["opcd"]["steps"]
    demos = {a: _final(d, a, "eval/distilled/demos") for a in ("opcd_nca", "opcd")}
    return (f"[benchmarks/reproduction_toy.md](benchmarks/reproduction_toy.md) ({steps} steps, seed 0, one run per "
            f"method; [plot](benchmarks/reproduction_toy.png)): every trained method reaches "
            f"{span([sm[a][ACC] for a in TRAINED])} on `reverse` without its context (untrained: "
            f"{pct(sm['icl'][ACC])}); with the context back: "
            + ", ".join(f"`{a}` {pct(sm[a][ACC_C])}" for a in TRAINED)
            + f"; with demonstrations as the context `opcd_nca` {pct(demos['opcd_nca'])} against "
            f"{pct(demos['opcd'])} for `opcd`. The paper's toy-world targets, under the rule of "
            f"[benchmarks/README.md](benchmarks/README.md#when-a-target-is-met): {_verdicts(d)}.")


@region("reproduction_toy_findings", "reproduction_toy.json")
def reproduction_toy_findings(d: dict) -> str:
    sm = d["summary"]
    n = reproduce._counts(sm, ACC)
    lead = round((sm["opcd"][ACC] - sm["offpolicy_cd"][ACC]) * n)
    demos = {a: _final(d, a, "eval/distilled/demos") for a in ("opcd_nca", "opcd", "offpolicy_cd")}
    kl = min(TRAINED, key=lambda a: sm[a]["eval/agreement_kl"])
    return "\n".join([
        f"- Targets under the one rule: {_verdicts(d)}. Every trained method reaches "
        f"{span([sm[a][ACC] for a in TRAINED])} without the context: OPCD's lead over off-policy CD on Acc_x is "
        f"{lead} test prompt(s) of {n}.",
        "- With the context back: " + ", ".join(f"`{a}` {pct(sm[a][ACC_C])} (Harm {pct(sm[a][HARM])})" for a in TRAINED)
        + f". With demonstrations as the context (not the distilled kind): `opcd_nca` {pct(demos['opcd_nca'])}, "
        f"`opcd` {pct(demos['opcd'])}, `offpolicy_cd` {pct(demos['offpolicy_cd'])}. `{kl}` has the lowest "
        f"teacher-student KL on the test prompts ({sm[kl]['eval/agreement_kl']:.2f} nats).",
        f"- The held-out wording of the `reverse` description is understood by no model, trained or not "
        f"({span([s.get('eval/distilled/system_heldout') for s in sm.values()])}): the shipped model memorised its "
        "training wordings, and distillation does not change that. OOD is therefore judged on the other 7 rules.",
        "- Wall times are not comparable between rows: the jobs ran one after another on a shared machine whose "
        "load the JSON does not record. Re-run `python benchmarks/reproduce.py --steps 100` on an idle machine "
        "for timings."])


@region("reproduction_smollm2_summary", "reproduction_smollm2.json")
def reproduction_smollm2_summary(d: dict) -> str:
    sm = d["summary"]
    w = sm.get("opcd_nca_warmup15", {})
    return (f"Distilling \"Always reply in French\" into SmolLM2-135M-Instruct ({sm['opcd']['steps']} steps, one run "
            f"per method): OPCD's no-context French rate is {pct(sm['opcd'][ACC])} (the in-context teacher: "
            f"{pct(sm['icl'][ACC_C])}; off-policy CD {pct(sm['offpolicy_cd'][ACC])}; SFT {pct(sm['sft'][ACC])}); "
            f"the other system prompts' rates go from {pct(sm['icl'][OOD])} to {pct(sm['opcd'][OOD])} under OPCD; "
            f"every method costs some unrelated factual answers ({pct(sm['icl']['eval/ood/none'])} → "
            f"{span([sm[a]['eval/ood/none'] for a in TRAINED])}). `opcd_nca` (β = 0.5) fails here: it ends with "
            f"Harm {pct(sm['opcd_nca'][HARM])} against {pct(sm['opcd'][HARM])} for `opcd`"
            + (f", and a linear β warm-up (`algo.nca_warmup_steps=15`) ends at Harm {pct(w.get(HARM))}" if w else "")
            + f". Targets under the one rule: {_verdicts(d)}.")


@region("reproduction_smollm2_findings", "reproduction_smollm2.json", "reproduction_toy.json", "vs_trl_smollm2.json")
def reproduction_smollm2_findings(d: dict, toy: dict, trl: dict) -> str:
    sm = d["summary"]
    w = "opcd_nca_warmup15"
    toy_nca = next(c for c in reproduce.checks(toy) if "Harm" in c.benchmark)
    nca_trl = trl["methods"]["opcd_nca"]["final"]["french"]["with"]["rate"]
    return "\n".join([
        f"- Targets under the one rule: {_verdicts(d)}. OPCD's Acc_x ({pct(sm['opcd'][ACC])}) against the ICL "
        f"teacher's with-prompt rate ({pct(sm['icl'][ACC_C])}) and off-policy CD ({pct(sm['offpolicy_cd'][ACC])}) "
        f"is within noise at these prompt counts. OPCD raises the other system prompts' with-prompt rates "
        f"({pct(sm['icl'][OOD])} → {pct(sm['opcd'][OOD])}) where off-policy CD, SFT and GKD, which train on teacher "
        f"text, end at {pct(sm['offpolicy_cd'][OOD])}, {pct(sm['sft'][OOD])} and {pct(sm['gkd'][OOD])}. SFT has the "
        f"highest Acc_x ({pct(sm['sft'][ACC])}) in this short budget: imitating the teacher's French tokens is the "
        "most direct signal for \"reply in French\".",
        f"- Every method costs unrelated facts ({pct(sm['icl']['eval/ood/none'])} → "
        f"{span([sm[a]['eval/ood/none'] for a in TRAINED])}): greedy answers drift into French and some of them "
        "into wrong content.",
        f"- **opcd_nca misses the Harm target here (Harm {pct(sm['opcd_nca'][HARM])} vs {pct(sm['opcd'][HARM])}).** "
        f"Its curve: at step 10 the with-prompt rate is {pct(_at(d, 'opcd_nca', ACC_C, 10))} (from "
        f"{pct(_at(d, 'opcd_nca', ACC_C, 0))}) while Acc_x is {pct(_at(d, 'opcd_nca', ACC, 10))}; it ends at Acc_x "
        f"{pct(sm['opcd_nca'][ACC])}, Acc_x,c {pct(sm['opcd_nca'][ACC_C])}. A first hypothesis was that the "
        "regulariser β·KL(sg[p(·|x)] ‖ p(·|c,x)) anchors the with-context behaviour to the *undistilled* "
        "no-context one before distillation has moved it, so `algo.nca_warmup_steps` (a linear ramp of β from 0) "
        f"was added and run once, with a ramp over half the budget fixed in advance (row `{w}`, same seed and "
        f"budget). It helps only partly: the with-prompt rate is still {pct(_at(d, w, ACC_C, 10))} at step 10, and "
        f"the run ends at Acc_x {pct(sm[w][ACC])}, Acc_x,c {pct(sm[w][ACC_C])}, Harm {pct(sm[w][HARM])}. The "
        "student's rollouts start in English, and on each of their positions the term says that the system prompt "
        "should not change the next token, including the first tokens, where the reply's language is decided; "
        "so the model may learn to ignore the prompt faster than the top-16 reverse KL teaches it French. This "
        "mechanism is a hypothesis, not a measured fact. In the TRL head-to-head (full-vocabulary reverse KL, "
        f"{trl['settings']['steps']} steps) the same β = 0.5 ended French-with-prompt at {pct(nca_trl)}, the base "
        f"model's {pct(trl['base']['rates']['french']['with']['rate'])} (`vs_trl_smollm2.md`). On the toy world "
        f"NCA's Harm is {toy_nca.verdict.label} of OPCD's ({toy_nca.measured}; `reproduction_toy.md`). Untried "
        "here: a smaller β, the full-vocabulary loss in this report, and retain prompts (`task.retain_ratio`). "
        "The numbers are as measured; none was tuned."])


# --------------------------------------------------------------------------------------------------
# Experience (experience_smollm2.py -> experience_smollm2.json)
# --------------------------------------------------------------------------------------------------
@region("experience_smollm2", "experience_smollm2.json")
def experience_smollm2(e: dict) -> str:
    c = e["candidates"]
    return (f"{sum(x['problems'] for x in c)} problems solved ({e['n_problems']} per candidate, solve rate "
            f"{span([x['solve_accuracy'] for x in c])}), one lesson per trace ({span([x['items'] for x in c], str)} "
            f"per candidate, {span([x['kept_items'] for x in c], str)} kept under {e['max_experience_tokens']} "
            f"tokens), {len(c)} candidates validated on {e['n_validation']} held-out problems: "
            + ", ".join(pct(x["accuracy"]) for x in c)
            + f" with the candidates against {pct(e['no_context_accuracy'])} without any context (the chosen "
            f"candidate: {pct(e['chosen_accuracy'])}). One run.")


# --------------------------------------------------------------------------------------------------
# Quickstart (record_quickstart.py -> quickstart.json)
# --------------------------------------------------------------------------------------------------
QUICKSTART_MISSING = ("_Not measured yet: the default run's figures (accuracy before and after, wall time of "
                      "command 1 from a fresh clone and again) are rendered here from "
                      "`benchmarks/results/quickstart.json` once it is recorded "
                      "(`python -m benchmarks.record_quickstart`)._")


def _secs(values) -> str:
    return span(values, mmss)


@region("quickstart", "quickstart.json", missing=QUICKSTART_MISSING)
def quickstart(q: dict) -> str:
    runs, fresh = q["runs"], [r for r in q["runs"] if r.get("fresh_clone")]
    again = [r for r in runs if not r.get("fresh_clone")]

    def col(key):
        return span([r.get(key) for r in runs])

    wall = []
    if fresh:
        wall.append(f"from a fresh clone {_secs([r['wall_s'] for r in fresh])} (setup "
                    f"{_secs([r.get('setup_s') for r in fresh])})")
    if again:
        wall.append(f"again, set up already {_secs([r['wall_s'] for r in again])}")
    lines = ["| | before | after OPCD |", "|---|---|---|",
             f"| `reverse`, **no context** (the distilled behaviour) | {col('distilled_none_before')} | "
             f"**{col('distilled_none_after')}** |",
             f"| `reverse`, with its system prompt (teacher) | {col('distilled_system_before')} | "
             f"{col('distilled_system_after')} (Harm {col('harm_after')}) |",
             f"| other 7 rules, with their system prompts | {col('others_system_before')} | {col('others_system_after')} |",
             f"| wall time of command 1, start-up included | | {'; '.join(wall)} |", "",
             f"Measured on {q['machine']} ({q.get('date', 'date not recorded')}): {n_runs(len(runs))} of "
             f"{q.get('steps', '?')} steps, {q.get('eval_prompts_per_rule', '?')} test prompts per rule; ranges over "
             "the runs."]
    if q.get("tests"):
        t = q["tests"]
        lines += ["", f"Command 2 on the same machine: {_secs([r['wall_s'] for r in t])} (setup "
                  f"{_secs([r.get('setup_s') for r in t])}), ending with `tests: "
                  f"{span([r['passed'] for r in t], str)} passed, {span([r['failed'] for r in t], str)} failed, "
                  f"{span([r['skipped'] for r in t], str)} skipped` ({n_runs(len(t))})."]
    return "\n".join(lines)


@region("toy_opcd_comment", "quickstart.json",
        missing="Measured results: README.md, Quickstart (benchmarks/results/quickstart.json; not measured yet).")
def toy_opcd_comment(q: dict) -> str:
    runs = q["runs"]
    return (f"Measured (README Quickstart; benchmarks/results/quickstart.json, {n_runs(len(runs))} on {q['machine']}):\n"
            f"no-context accuracy on `reverse` {span([r['distilled_none_before'] for r in runs])} -> "
            f"{span([r['distilled_none_after'] for r in runs])}, other rules' with-context accuracy\n"
            f"{span([r['others_system_before'] for r in runs])} -> {span([r['others_system_after'] for r in runs])}, "
            f"wall time {_secs([r['wall_s'] for r in runs])}.")
