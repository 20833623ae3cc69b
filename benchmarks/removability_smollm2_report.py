"""The removability ablation's report (``benchmarks/removability_smollm2.py``): from each (row, seed)'s
evaluations and metrics to rates with intervals over prompts, paired differences against the row's
reference, the non-inferiority verdicts of issue 16's item 2, and the Markdown. Pure apart from writing
files: tested on synthetic evaluations, and the Markdown re-renders from the JSON.

Statistics. The unit is the held-out prompt. A row's seeds are pooled per prompt (each prompt's rate is
its mean over seeds and samples), so prompts are resampled with all their seeds. Rates carry a 95%
percentile bootstrap interval over prompts; a difference between two rows is the paired bootstrap over
the same prompts (``opcd.eval.stats.paired_bootstrap``) at two-sided level 0.90, whose lower (upper) end
is the one-sided 95% bound a non-inferiority claim is judged on. Harm = P(wrong with the prompt | right
without) is a ratio over prompts: per prompt, ``w (1 - c)`` over ``w`` (w, c: its rates without / with the
prompt, which come from independent samples), summed over prompts and seeds; its intervals resample
prompts jointly for numerator and denominator. A verdict is "met" when the one-sided 95% bound clears the
margin, "missed" when the other end does not, "within noise" otherwise (``benchmarks.common.verdict``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.common.report import MISSING, pct, write_json
from benchmarks.common.verdict import verdict
from opcd.eval.stats import bootstrap_interval, paired_bootstrap
from opcd.tasks.sysprompt_heldout import HELDOUT_PROMPTS

LEVEL = 0.90  # two-sided level of paired differences: each end is a one-sided 95% bound
N_BOOT = 10_000
MARGINS = {"acc_x": 0.05, "acc_xc": 0.05, "harm": 0.03, "others": 0.05}  # issue 16, item 2
MAX_LEARNER_RATIO = 2.0  # item 4: the shipped form's learner time at most 2x plain opcd's


# --------------------------------------------------------------------------------------------------
# Per-prompt views of one evaluation
# --------------------------------------------------------------------------------------------------
def only(results: dict) -> dict:
    """The one model's entry of an evaluator result file (``{label: result}``)."""
    if len(results) != 1:
        raise ValueError(f"expected one evaluated model, got {len(results)}")
    return next(iter(results.values()))


def per_prompt(sysprompt: dict, name: str, cond: str) -> list[float]:
    """Per-prompt rates of system prompt ``name`` ``with`` or ``without`` it, from an evaluator result."""
    return list(only(sysprompt)["rates"][name][cond]["per_prompt"])


def pooled(seeds: list[list[float]]) -> list[float]:
    """Per-prompt mean over seeds (each inner list: one seed's per-prompt rates, same prompts)."""
    if len({len(s) for s in seeds}) != 1:
        raise ValueError(f"seeds were evaluated on different prompts: {[len(s) for s in seeds]}")
    return [sum(x) / len(x) for x in zip(*seeds)]


def harm_parts(without: list[list[float]], with_: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per-prompt (numerator, denominator) of Harm summed over seeds: ``sum_s w (1 - c)`` and ``sum_s w``."""
    num = [sum(w * (1 - c) for w, c in zip(ws, cs)) for ws, cs in zip(zip(*without), zip(*with_))]
    den = [sum(ws) for ws in zip(*without)]
    return num, den


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    d = den.sum(axis=-1)
    return np.where(d > 0, num.sum(axis=-1) / np.where(d > 0, d, 1.0), np.nan)


def ratio_interval(num, den, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``sum(num) / sum(den)`` with its percentile bootstrap interval over prompts (None when ``den`` is 0)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    if den.sum() <= 0:
        return {"rate": None, "lo": None, "hi": None}
    idx = np.random.default_rng(seed).integers(0, len(num), size=(n_boot, len(num)))
    boots = _ratio(num[idx], den[idx])
    a = (1 - level) / 2
    return {"rate": float(num.sum() / den.sum()), "lo": float(np.nanquantile(boots, a)),
            "hi": float(np.nanquantile(boots, 1 - a))}


def paired_ratio_difference(a: tuple, b: tuple, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Harm(a) - Harm(b) for two runs on the same prompts, ``a`` and ``b`` = (numerators, denominators)
    per prompt; prompts resampled jointly. ``{"diff", "lo", "hi"}`` at two-sided ``level``."""
    (na, da), (nb, db) = (tuple(np.asarray(x, float) for x in p) for p in (a, b))
    if len(na) != len(nb):
        raise ValueError(f"paired runs need the same prompts: {len(na)} vs {len(nb)}")
    if da.sum() <= 0 or db.sum() <= 0:
        return {"diff": None, "lo": None, "hi": None}
    idx = np.random.default_rng(seed).integers(0, len(na), size=(n_boot, len(na)))
    boots = _ratio(na[idx], da[idx]) - _ratio(nb[idx], db[idx])
    al = (1 - level) / 2
    return {"diff": float(na.sum() / da.sum() - nb.sum() / db.sum()), "lo": float(np.nanquantile(boots, al)),
            "hi": float(np.nanquantile(boots, 1 - al))}


def rate(values: list[float]) -> dict:
    """Mean per-prompt rate with its 95% bootstrap interval over prompts."""
    if not values:
        return {"rate": None, "lo": None, "hi": None}
    lo, hi = bootstrap_interval(values, n_boot=N_BOOT)
    return {"rate": sum(values) / len(values), "lo": lo, "hi": hi}


# --------------------------------------------------------------------------------------------------
# One row: rates, where the regulariser pushes, learner time
# --------------------------------------------------------------------------------------------------
def learner_s_per_step(metrics: list[dict]) -> float | None:
    """Median learner seconds per step over steps 2..N (step 1 warms up)."""
    xs = [r["learner/seconds"] for r in metrics if r.get("step", 0) >= 2 and "learner/seconds" in r]
    return float(np.median(xs)) if xs else None


def consistency(metrics: list[dict]) -> dict:
    """Mean over the steps where the regulariser was on of ``loss/consistency`` and its position buckets."""
    out = {}
    for key in ("consistency", "consistency_first", "consistency_rest", "consistency_kept"):
        xs = [r[f"loss/{key}"] for r in metrics if f"loss/{key}" in r]
        out[key.replace("consistency_", "") if key != "consistency" else "kl"] = float(np.mean(xs)) if xs else None
    return out


def views(seeds: dict, distill: str, others: list[str]) -> dict:
    """Per-seed per-prompt rates of a row: ``{"acc_x": [[...] per seed], "acc_xc": ..., "others": {o: ...},
    "ifeval": [[...] per seed]}`` (seeds in sorted order)."""
    order = sorted(seeds)
    sp = [seeds[s]["sysprompt"] for s in order]
    ife = [only(seeds[s]["ifeval"])["strict_per_prompt"] for s in order if seeds[s].get("ifeval")]
    return {"seeds": order, "acc_x": [per_prompt(x, distill, "without") for x in sp],
            "acc_xc": [per_prompt(x, distill, "with") for x in sp],
            "others": {o: [per_prompt(x, o, "with") for x in sp] for o in others}, "ifeval": ife}


def row_summary(v: dict, seeds: dict) -> dict:
    """Pooled rates with intervals over prompts, the regulariser's position buckets, learner s/step per seed."""
    cons = [consistency(seeds[s]["metrics"]) for s in v["seeds"]]
    x = pooled(v["acc_x"])
    styles = {}
    if len(x) == len(HELDOUT_PROMPTS):  # heldout240, in its order: Acc_x per prompt style
        for (style, _), r in zip(HELDOUT_PROMPTS, x):
            styles.setdefault(style, []).append(r)
    return {"acc_x_by_style": {k: sum(r) / len(r) for k, r in styles.items()},"seeds": v["seeds"], "acc_x": rate(pooled(v["acc_x"])), "acc_xc": rate(pooled(v["acc_xc"])),
            "harm": ratio_interval(*harm_parts(v["acc_x"], v["acc_xc"])),
            "others": {o: rate(pooled(x)) for o, x in v["others"].items()},
            "ifeval": rate(pooled(v["ifeval"])) if v["ifeval"] else None,
            "consistency": {k: _mean([c[k] for c in cons]) for k in ("kl", "first", "rest", "kept")},
            "learner_s_per_step": {str(s): learner_s_per_step(seeds[s]["metrics"]) for s in v["seeds"]}}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _common(v: dict, ref: dict) -> tuple[dict, dict]:
    """Both rows restricted to the seeds they share (pairing is per prompt *and* seed)."""
    seeds = [s for s in v["seeds"] if s in ref["seeds"]]

    def pick(x):
        ix = [x["seeds"].index(s) for s in seeds]
        return {"seeds": seeds, "acc_x": [x["acc_x"][i] for i in ix], "acc_xc": [x["acc_xc"][i] for i in ix],
                "others": {o: [y[i] for i in ix] for o, y in x["others"].items()},
                "ifeval": [x["ifeval"][i] for i in ix] if len(x["ifeval"]) == len(x["seeds"]) else []}
    return pick(v), pick(ref)


def compare(v: dict, ref: dict, base_xc: list[float] | None) -> dict:
    """Paired differences of a row against its reference (and its with-prompt rate against the base model's),
    on the seeds both have; ``diff``, ``lo``, ``hi`` (level 0.90) and the bootstrap ``p``."""
    a, b = _common(v, ref)
    if not a["seeds"]:
        return {}
    out = {"seeds": a["seeds"], "acc_x": paired_bootstrap(pooled(a["acc_x"]), pooled(b["acc_x"]), LEVEL),
           "harm": paired_ratio_difference(harm_parts(a["acc_x"], a["acc_xc"]), harm_parts(b["acc_x"], b["acc_xc"])),
           "others": {o: paired_bootstrap(pooled(a["others"][o]), pooled(b["others"][o]), LEVEL) for o in a["others"]}}
    if base_xc is not None:
        out["acc_xc_vs_base"] = paired_bootstrap(pooled(a["acc_xc"]), base_xc, LEVEL)
    if a["ifeval"] and b["ifeval"]:
        out["ifeval"] = paired_bootstrap(pooled(a["ifeval"]), pooled(b["ifeval"]), LEVEL)
    return out


def checks(cmp: dict, learner_ratios: list[float], paper_cmp: dict | None = None) -> list[dict]:
    """Issue 16's item 2 (and item 4's cost bound) as ``[{"claim", "diff", "lo", "hi", "target", "verdict"}]``."""
    out = []

    def add(key, claim, d, target):
        if not d or d.get("diff") is None:
            out.append({"key": key, "claim": claim, "target": target, "verdict": "not measured"})
            return
        v = verdict("rate", (d["lo"], d["hi"]), target)  # (lo, hi) at level 0.90: one-sided 95% bounds
        out.append({"key": key, "claim": claim, "diff": d["diff"], "lo": d["lo"], "hi": d["hi"], "target": target,
                    "verdict": v.status, "detail": v.detail.replace("95% interval", "90% interval (one-sided 95% bounds)")})

    add("acc_x", "Acc_x ≥ reference's − 5 points", cmp.get("acc_x"), f">= {-MARGINS['acc_x']}")
    add("acc_xc", "Acc_x,c ≥ base model's − 5 points", cmp.get("acc_xc_vs_base"), f">= {-MARGINS['acc_xc']}")
    add("harm", "Harm ≤ reference's + 3 points", cmp.get("harm"), f"<= {MARGINS['harm']}")
    if paper_cmp is not None:
        add("harm_vs_paper", "Harm below the paper form's", paper_cmp.get("harm"), "< 0")
    for o, d in cmp.get("others", {}).items():
        add(o, f"{o} with its prompt ≥ reference's − 5 points", d, f">= {-MARGINS['others']}")
    v = verdict("ratio", learner_ratios, f"<= {MAX_LEARNER_RATIO}") if learner_ratios else None
    out.append({"key": "learner", "claim": f"learner time ≤ {MAX_LEARNER_RATIO:g}× the reference's",
                "ratios": learner_ratios, "target": f"<= {MAX_LEARNER_RATIO}",
                "verdict": v.status if v else "not measured", "detail": v.detail if v else ""})
    return out


def same_algo(a: dict, b: dict) -> bool:
    """Whether two rows' runs trained with the same algo config (``algo`` of their first seed, name aside)."""
    def cfg(seeds):
        algo = dict(next(iter(seeds.values())).get("algo") or {})
        algo.pop("name", None)
        return algo
    return bool(cfg(a)) and cfg(a) == cfg(b)


def learner_ratios(summary: dict, ref_summary: dict) -> list[float]:
    """Per shared seed: the row's median learner s/step over its reference's."""
    a, b = summary["learner_s_per_step"], ref_summary["learner_s_per_step"]
    return [a[s] / b[s] for s in a if s in b and a[s] and b[s]]


def build_report(rows, data: dict, settings: dict, not_run: dict) -> dict:
    """``rows``: the grid's Row objects that were asked for; ``data``: ``collect``'s ``{"runs", "base"}``."""
    from dataclasses import asdict

    from benchmarks.removability_smollm2 import OTHERS

    base_sp = data["base"].get("eval_sysprompt.json")
    base_if = data["base"].get("eval_ifeval.json")
    report = {"settings": settings, "not_run": not_run, "margins": MARGINS, "rows": {},
              "base": {"ifeval": rate(only(base_if)["strict_per_prompt"]) if base_if else None}}
    vs = {}
    for row in rows:
        seeds = data["runs"].get(row.name)
        entry = {"row": asdict(row)}
        if seeds:
            vs[row.name] = views(seeds, row.distill, OTHERS[row.distill])
            entry["summary"] = row_summary(vs[row.name], seeds)
        report["rows"][row.name] = entry
    for row in rows:
        entry = report["rows"][row.name]
        if row.name == row.reference or row.name not in vs or row.reference not in vs:
            continue
        base_xc = per_prompt(base_sp, row.distill, "with") if base_sp else None
        entry["vs_reference"] = compare(vs[row.name], vs[row.reference], base_xc)
        paper = row.name.replace("shipped", "paper") if row.name.startswith("shipped") else None
        paper_cmp = compare(vs[row.name], vs[paper], None) if paper in vs else None
        if paper_cmp is not None and same_algo(data["runs"][row.name], data["runs"][paper]):
            entry["note"] = "the shipped form is the paper's form here: 'Harm below the paper form's' cannot hold"
        ratios = learner_ratios(entry["summary"], report["rows"][row.reference]["summary"])
        entry["checks"] = checks(entry["vs_reference"], ratios, paper_cmp)
    if base_sp:
        report["base"]["with"] = {n: rate(per_prompt(base_sp, n, "with")) for n in ("french", "spanish", "cat")}
    return report


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------
def _ci(r: dict | None) -> str:
    if not r or r.get("rate") is None:
        return MISSING
    return f"{pct(r['rate'])} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"


def _pts(d: dict | None) -> str:
    if not d or d.get("diff") is None:
        return MISSING
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def _num(x, fmt="{:.3f}") -> str:
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# Context removability on SmolLM2: the consistency regulariser's ablation (issue 16)", "",
             "Generated by `python benchmarks/removability_smollm2.py` from `results/removability_smollm2.json`; "
             "statistics in `benchmarks/removability_smollm2_report.py`'s docstring. Rates pool the seeds per prompt "
             f"({s['eval_prompts']} held-out prompts of `heldout240`, {s['eval_samples']} sample(s) each, T = 0.7); "
             "[…] = 95% interval over prompts. Steps: ablation rows "
             f"{s['steps']['ablation']}, shipped rows {s['steps']['shipped']}.", "",
             "## Rates", "",
             "| row | seeds | Acc_x | Acc_x,c | Harm | others with their prompt | IFEval strict | "
             "R first 4 tokens | R later | kept | learner s/step |", "|" + "---|" * 11]
    for name, e in report["rows"].items():
        sm = e.get("summary")
        if not sm:
            lines.append(f"| `{name}` | not run |" + " |" * 9)
            continue
        c = sm["consistency"]
        others = "; ".join(f"{o} {_ci(r)}" for o, r in sm["others"].items())
        lst = [x for x in sm["learner_s_per_step"].values() if x]
        lines.append(f"| `{name}` | {len(sm['seeds'])} | {_ci(sm['acc_x'])} | {_ci(sm['acc_xc'])} | {_ci(sm['harm'])} | "
                     f"{others} | {_ci(sm['ifeval'])} | {_num(c['first'])} | {_num(c['rest'])} | {_num(c['kept'], '{:.2f}')} | "
                     f"{_num(_mean(lst), '{:.1f}')} |")
    base = report.get("base", {})
    if base.get("with"):
        lines += ["", "Base model with each system prompt: " + "; ".join(f"{n} {_ci(r)}" for n, r in base["with"].items())
                  + f"; IFEval strict {_ci(base.get('ifeval'))}."]
    lines += ["", "## Paired differences against each row's reference (points; […] = 90% interval: each end is a "
              "one-sided 95% bound)", "", "| row | reference | ΔAcc_x | ΔAcc_x,c vs base | ΔHarm | Δothers | ΔIFEval | "
              "learner × reference | verdicts (item 2) |", "|" + "---|" * 9]
    for name, e in report["rows"].items():
        cmp, chk = e.get("vs_reference"), e.get("checks")
        if not cmp or not chk:
            continue
        others = "; ".join(f"{o} {_pts(d)}" for o, d in cmp["others"].items())
        ratios = next((c["ratios"] for c in chk if "ratios" in c), [])
        verdicts = ", ".join(f"{c['key']}: {c['verdict']}" for c in chk)
        lines.append(f"| `{name}` | `{e['row']['reference']}` | {_pts(cmp.get('acc_x'))} | {_pts(cmp.get('acc_xc_vs_base'))} | "
                     f"{_pts(cmp.get('harm'))} | {others} | {_pts(cmp.get('ifeval'))} | "
                     f"{', '.join(f'{r:.2f}×' for r in ratios) or MISSING} | {verdicts} |")
    shipped = {n: e for n, e in report["rows"].items() if n.startswith("shipped") and e.get("checks")}
    lines += ["", "## The shipped configuration (item 2)", ""]
    if not shipped:
        lines.append("Not measured yet: run the `shipped@95`, `paper@95` and `opcd@95` rows (and their `_es` twins).")
    for name, e in shipped.items():
        lines += [f"`{name}` against `{e['row']['reference']}` (seeds {e['vs_reference'].get('seeds')}):", ""]
        for c in e["checks"]:
            lines.append(f"- **{c['verdict']}**: {c['claim']} ({c.get('detail') or 'no measurement'})")
        lines += [f"- note: {e['note']}"] if e.get("note") else []
        lines.append("")
    lines += ["", "## Not run", ""] + [f"- {k}: {v}" for k, v in report.get("not_run", {}).items()]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict, out_dir: Path) -> list[Path]:
    """``<out_dir>/removability_smollm2.md`` and ``<out_dir>/results/removability_smollm2.json``."""
    js = write_json(out_dir / "results" / "removability_smollm2.json", report)
    md = out_dir / "removability_smollm2.md"
    md.write_text(markdown(report))
    return [md, js]
