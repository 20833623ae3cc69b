"""Region of the scaling model (``benchmarks/scaling_model.py`` -> ``scaling_model.json``): on paper.

One table of inputs and assumptions, then per paper preset: every candidate 8-GPU layout with its
largest GPU and step time on each GPU type, the phases and the memory of the layout proposed for the
H200 (the fastest that fits), and a paragraph naming the dominant phase, what ``rollout.overlap``
would hide, the data path before and after, and the teacher's transfer choice.
"""
from __future__ import annotations

from benchmarks.common.regions import region
from benchmarks.common.report import MISSING

INT = "{:,.0f}".format
PHASES = [("rollout", "rollout (decode)"), ("data_path_before", "rollout data path, before issue 15"),
          ("data_path_after", "rollout data path, after"), ("batch_movement", "moving the batch"),
          ("teacher_forward", "teacher forward pass"), ("teacher_transfer", "teacher transfer"),
          ("learner", "learner forward + backward"), ("weight_sync", "weight sync")]
NAMES = dict(PHASES)


def gb(x) -> str:
    """Bytes in readable decimal units."""
    if x is None:
        return MISSING
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if x >= f:
            return f"{x / f:,.1f} {unit}"
    return f"{x:,.0f} B"


def sec(x) -> str:
    if x is None:
        return MISSING
    return INT(x) if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def flop(x) -> str:
    return f"{x:.2g} FLOP".replace("e+", "e")


def short(path: str) -> str:
    return path.split("/")[-1]


def _assumptions(d: dict) -> list[str]:
    rows = ["| input or assumption | value | source or why |", "|---|---|---|"]
    for name, g in d["inputs"]["gpus"].items():
        rows.append(f"| GPU: {name} (SXM) | {gb(g['memory'])} HBM, {g['hbm'] / 1e12:.2f} TB/s, "
                    f"{g['flops'] / 1e12:.0f} TFLOP/s dense bf16 | NVIDIA data sheet |")
    used = {p["config"][r] for p in d["presets"].values() for r in ("student", "teacher")}
    for name, m in d["inputs"]["models"].items():
        if name not in used:
            continue
        rows.append(f"| model: {name} | V {INT(m['vocab'])}, d {INT(m['hidden'])}, {m['layers']} layers, {m['heads']} heads "
                    f"({m['kv_heads']} KV) × {m['head_dim']}, MLP {INT(m['intermediate'])}, "
                    f"{'tied' if m['tied'] else 'untied'} embeddings: {m['params'] / 1e9:.2f}B parameters "
                    f"(card: {m['card_params'] / 1e9:.2f}B) | its config.json on the Hub |")
    for task, t in d["inputs"]["task_tokens"].items():
        rows.append(f"| tokens, task `{task}` | prompt {INT(t['prompt'])}, context {INT(t['context'])}"
                    + (f", environment reply {t['observation']} per turn" if t["observation"] else "")
                    + f" | {d['inputs']['task_tokens_why']} |")
    for name, a in d["assumptions"].items():
        v, unit = a["value"], a["unit"]
        val = (gb(v) + unit[len("bytes"):] if unit.startswith("bytes") else f"{gb(v)}/s" if unit == "B/s"
               else "yes" if unit == "flag" else f"{v:g} {unit}")
        rows.append(f"| `{name}` | {val} | {a['why']} |")
    return rows


def _step_of(e: dict) -> dict:
    """The step with the data path after issue 15 once measured, else with the data path as it was."""
    return e["step_after"] or e["step_before"]


def _largest(e: dict) -> str:
    name, g = max(e["gpus"].items(), key=lambda kv: kv[1]["total"])
    kv = e["kv_cache"]
    if not kv["holds_max_model_len"]:
        return f"engine KV cache {gb(max(kv['capacity_per_engine'], 0))} < one max_model_len sequence: **does not fit**"
    return f"{name} {gb(g['total'])}" + ("" if g["fits"] else ": **does not fit**")


def _step(e: dict) -> str:
    s = _step_of(e)
    if s is None or s["sequential"] is None:
        return MISSING
    return f"{sec(s['sequential'])} / " + (sec(s["overlap"]) if s["overlap_allowed"] else "not allowed")


def _layouts(p: dict, gpus: list[str]) -> list[str]:
    head = "| layout | " + " | ".join(f"{g}: largest GPU | {g}: step s" for g in gpus) + " |"
    rows = [head, "|---|" + "---|---:|" * len(gpus)]
    for x in p["layouts"]:
        mark = " (proposed for " + ", ".join(g for g in gpus if p["proposed"][g] == x["name"]) + ")" \
            if any(p["proposed"][g] == x["name"] for g in gpus) else ""
        cells = " | ".join(f"{_largest(x['gpus'][g])} | {_step(x['gpus'][g])}" for g in gpus)
        rows.append(f"| {x['name']}{mark} | {cells} |")
    return rows


def _work(n: str, ph: dict, p: dict, cfg: dict) -> str:
    w = p["workload"]
    if n == "rollout":
        return (f"{ph['sequences_per_engine']} sequences per engine, {ph['concurrency']} at once "
                f"({ph['waves']} wave{'s' if ph['waves'] > 1 else ''}); {ph['bound']}-bound")
    if n.startswith("data_path"):
        us = ph["us_per_token"]
        return (f"{us:g} µs × {INT(w['generated'])} generated tokens" if us is not None
                else "pending measurement (`bench_data_path.py`)")
    if n == "batch_movement":
        return "rollout arrays to the driver, sequences + support ids to the teacher, the batch to the learner"
    if n == "teacher_forward":
        return (f"{flop(ph['flops'])} over {INT(w['sequences'])} × {INT(w['teacher_seq'])} tokens, "
                f"{cfg['teacher.num_gpus']:g} GPU")
    if n == "teacher_transfer":
        t = p["transfer"]
        alts = ", ".join(f"{k} {INT(v)}" for k, v in t["options"].items())
        return f"`{t['mode']}`, {INT(t['bytes_per_token'])} B/token (candidates, B/token: {alts})"
    if n == "learner":
        return (f"{flop(ph['flops_per_rank'])} per rank on {cfg['learner.num_ranks']} rank(s), ZeRO-"
                f"{cfg['learner.zero_stage']}; collectives {sec(ph['comm_seconds'])} s")
    return f"{gb(ph['bytes'])} of bf16 weights to {cfg['rollout.num_workers']} engines"


def _phases(p: dict, x: dict, gpus: list[str]) -> list[str]:
    cfg = x["config"]
    fits = {g: x["gpus"][g]["fits"] for g in gpus}
    head = " | ".join(f"{g} s" + ("" if fits[g] else " (does not fit)") for g in gpus)
    rows = [f"| phase | work per step | bytes per step | {head} |", "|---|---|---|" + "---:|" * len(gpus)]
    h = x["gpus"][gpus[0]]["phases"]
    for n, label in PHASES:
        ph = h[n]
        rows.append(f"| {label} | {_work(n, ph, p, cfg)} | {gb(ph['bytes'])} {ph['bytes_are']} | "
                    + " | ".join(sec(x["gpus"][g]["phases"][n]["seconds"]) for g in gpus) + " |")
    for side in ("before", "after"):
        steps = [x["gpus"][g][f"step_{side}"] for g in gpus]
        if steps[0] is None:
            rows.append(f"| **step**, data path after | | | " + " | ".join(["pending"] * len(gpus)) + " |")
            continue
        rows.append(f"| **step, phases in sequence**, data path {side} | | | "
                    + " | ".join(f"**{sec(s['sequential'])}**" for s in steps) + " |")
        rows.append(f"| step with `rollout.overlap=true`, data path {side} | max(generate side, learner + sync) | | "
                    + " | ".join(sec(s["overlap"]) if s["overlap_allowed"] else "not allowed (colocated)"
                                 for s in steps) + " |")
    return rows


def _memory(x: dict, gpus: list[str]) -> list[str]:
    g0 = x["gpus"][gpus[0]]
    rows = ["| actor | GPUs | GPU memory parts (" + gpus[0] + ") | " + " | ".join(f"{g} per GPU" for g in gpus)
            + " | host memory |", "|---|---:|---|" + "---:|" * len(gpus) + "---:|"]
    host = g0["host"]
    host_of = {"engine": host["engine (each)"], "learner rank": host["learner rank (each)"], "teacher": host["teacher"],
               "engine + learner rank": host["engine (each)"] + host["learner rank (each)"]}
    for name, g in g0["gpus"].items():
        parts = ", ".join(f"{k.replace('_', ' ')} {gb(v)}" for k, v in g["parts"].items() if v)
        tot = " | ".join(f"{gb(x['gpus'][gg]['gpus'][name]['total'])} "
                         f"({'fits' if x['gpus'][gg]['gpus'][name]['fits'] else '**does not fit**'})" for gg in gpus)
        rows.append(f"| {name} | {g['count']} | {parts} | {tot} | {gb(host_of[name])} each |")
    rows.append(f"| driver | 0 | – | " + " | ".join(["–"] * len(gpus)) + f" | {gb(host['driver'])} |")
    return rows


def _paragraph(p: dict, x: dict, gpus: list[str]) -> str:
    g = gpus[0]
    e = x["gpus"][g]
    s, ph = _step_of(e), e["phases"]
    side = "after" if e["step_after"] else "before"
    dom = s["dominant"]
    out = [f"On the {g}, {NAMES[dom]} is the largest phase: {sec(ph[dom]['seconds'])} s of a {sec(s['sequential'])} s "
           f"step ({100 * s['dominant_share']:.0f}%)."]
    gen, train = s["generate_side"], s["train_side"]
    if not s["overlap_allowed"]:
        out.append("`rollout.overlap=true` is refused in a colocated layout (the engines sleep while the learner "
                   f"trains), so nothing is hidden; the learner and sync add {sec(train)} s.")
    elif gen >= train:
        out.append(f"`rollout.overlap=true` would hide the learner and sync ({sec(train)} s) behind rollout, data "
                   f"path and teacher ({sec(gen)} s), not the largest phase itself.")
    else:
        out.append(f"`rollout.overlap=true` would hide rollout, data path and teacher ({sec(gen)} s) behind the "
                   f"learner and sync ({sec(train)} s).")
    before, after = ph["data_path_before"], ph["data_path_after"]
    b_share = before["seconds"] / e["step_before"]["sequential"]
    larger = ", more than any other phase" if before["seconds"] > ph[dom]["seconds"] else ""
    out.append(f"The rollout's data path as it was before issue 15 costs {sec(before['seconds'])} s a step "
               f"({100 * b_share:.0f}%{larger}); after it: "
               + ("pending measurement, so the step above counts the old path." if after["seconds"] is None
                  else f"{sec(after['seconds'])} s ({100 * s['data_path_share']:.0f}%), the path the step above counts."
                  if side == "after" else f"{sec(after['seconds'])} s."))
    t, o = p["transfer"], p["transfer"]["options"]
    if t["mode"] == "logprobs" and t["bytes_per_token"] < o["hidden"]:
        why = (f"top-k log-probs are the fewest bytes (hidden states would be {INT(o['hidden'])} B/token, full "
               f"log-probs {INT(o['full_logprobs'])})")
    else:
        why = f"the cheapest option this loss allows (candidates: {', '.join(f'{k} {INT(v)}' for k, v in o.items())})"
    out.append(f"The teacher ships `{t['mode']}` at {INT(t['bytes_per_token'])} B/token: {why}.")
    fullest = max(e["gpus"].values(), key=lambda v: v["total"])
    if fullest["total"] > 0.95 * e["capacity"]:
        out.append(f"It fits with under 5% to spare: {gb(fullest['total'])} of {gb(e['capacity'])} on its fullest GPU.")
    for other in gpus[1:]:
        chosen = p["proposed"][other]
        if chosen is None:
            out.append(f"No candidate layout fits on the {other}.")
            continue
        y = _step_of(next(r for r in p["layouts"] if r["name"] == chosen)["gpus"][other])
        out.append(f"On the {other} the fastest layout that fits is “{chosen}”: {sec(y['sequential'])} s a step, "
                   f"{NAMES[y['dominant']]} the largest phase.")
    return " ".join(out)


def preset_markdown(name: str, p: dict) -> list[str]:
    gpus = list(p["proposed"])
    c, w = p["config"], p["workload"]
    turns = f" × {w['turns']} turns" if w["turns"] > 1 else ""
    teacher = "the student itself" if c["teacher"] == c["student"] else short(c["teacher"])
    lines = [f"**{name}**: {short(c['student'])} ({p['params']['student'] / 1e9:.1f}B), teacher {teacher}; "
             f"{c['prompts_per_step']} prompts × {c['rollout.n']} × ≤ {INT(c['rollout.max_tokens'])} tokens{turns} "
             f"= {INT(w['generated'])} generated tokens a step; `{c['algo.loss']}`, top-{c['algo.top_k']}; "
             f"max_model_len {INT(c['model.max_model_len'])}.", "",
             "Candidate layouts (8 GPUs each; step = phases in sequence / with `rollout.overlap=true`; data path "
             + ("after issue 15" if p["data_path"]["after_us_per_token"] is not None else "as before issue 15") + "):", ""]
    lines += _layouts(p, gpus)
    pick = p["proposed"][gpus[0]]
    if pick is None:
        return lines + ["", f"No candidate layout fits on the {gpus[0]}."]
    x = next(r for r in p["layouts"] if r["name"] == pick)
    lines += ["", f"Proposed for the {gpus[0]}: **{pick}** (`{' '.join(x['overrides'])}`). Its phases:", ""]
    lines += _phases(p, x, gpus) + ["", "Its memory:", ""] + _memory(x, gpus)
    return lines + ["", _paragraph(p, x, gpus)]


@region("scaling_model", "scaling_model.json")
def scaling_model(d: dict) -> str:
    lines = ["Computed by `python -m benchmarks.scaling_model` (`results/scaling_model.json`) from the presets' "
             "configs as Hydra composes them, the inputs and assumptions below, and "
             "`opcd.transfer.plan_transfer` for the teacher's bytes. Nothing here is measured.", ""]
    lines += _assumptions(d)
    for name, p in d["presets"].items():
        lines += ["", f"### {name}", ""] + preset_markdown(name, p)
    return "\n".join(lines)
