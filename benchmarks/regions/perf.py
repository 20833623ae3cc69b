"""Regions of the performance benchmarks: teacher scoring, rollout, weight sync, loss memory, data path.

Each ``*_check`` function states one issue-#5 target and its verdict (``benchmarks.common.verdict``);
``benchmarks.regions.targets`` collects them into the targets table.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.common.regions import region
from benchmarks.common.report import machine, mmss, num, pct, runs as n_runs, span, times
from benchmarks.common.verdict import Check, Verdict, runs_of, verdict

INT = "{:,.0f}".format


def _ratio_fmt(v: float) -> str:
    return times(v)


# --------------------------------------------------------------------------------------------------
# Teacher scoring (bench_teacher.py -> teacher_scoring.json)
# --------------------------------------------------------------------------------------------------
def teacher_check(t: dict) -> Check:
    vals = [r["actor_over_forward"] for r in runs_of(t)]
    return Check("teacher actor vs a plain forward pass (throughput)", "≥ 0.8×", span(vals, times),
                 verdict("ratio", vals, ">= 0.8", _ratio_fmt))


@region("teacher_scoring", "teacher_scoring.json")
def teacher_scoring(t: dict) -> str:
    runs = runs_of(t)
    rows = [("teacher_actor",
             "opcd's `TeacherActor.score` in its Ray process, timed around `ray.get` (what the loop calls)"),
            ("forward_pass", "plain batched forward pass + log-softmax + top-k in this process (`opcd.teacher.scoring`)"),
            ("vllm_prompt_logprobs", f"vLLM `prompt_logprobs={t['k']}`, converted to the same tensor")]
    lines = ["| method | seconds | tokens/s |", "|---|---:|---:|"]
    for key, label in rows:
        lines.append(f"| {label} | {span([r['timings'][key]['seconds'] for r in runs], '{:.3f}'.format)} | "
                     f"{span([r['timings'][key]['tokens_per_s'] for r in runs], INT)} |")
    c = teacher_check(t)
    lines += ["", f"{t['n']} sequences, {INT(t['tokens'])} tokens, top-{t['k']}; {n_runs(len(runs))} "
              f"({machine(t.get('environment'), '`teacher_scoring.json`')}). "
              f"Teacher actor / forward pass: **{c.measured}** "
              f"(target {c.target}: {c.verdict.label}). The forward pass is "
              f"**{span([r['forward_over_vllm'] for r in runs], times)}** vLLM's prompt log-probs."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Rollout (bench_rollout.py -> rollout.json)
# --------------------------------------------------------------------------------------------------
def rollout_check(r: dict) -> Check:
    """The >= 0.9x target compares opcd's rollout with direct vLLM on the same engines and threads.
    ``rollout.json`` records it under ``same_engines`` (``{"ratio": x}`` per run) once measured; the
    ratio it has always recorded pits 2 single-thread engines against 1 two-thread engine."""
    runs = runs_of(r)
    like = [x["same_engines"]["ratio"] for x in runs if "same_engines" in x]
    unlike = span([x["ratio"] for x in runs], times)
    if like:
        return Check("rollout vs direct vLLM, same engines and threads", "≥ 0.9×", span(like, times),
                     verdict("ratio", like, ">= 0.9", _ratio_fmt))
    return Check("rollout vs direct vLLM", "≥ 0.9×",
                 f"{unlike} with 2 engines × 1 thread against 1 engine × 2 threads ({n_runs(len(runs))})",
                 Verdict("not measured", "not measured like for like"),
                 "the earlier “met” compared two engines with one")


@region("rollout", "rollout.json")
def rollout(r: dict) -> str:
    runs = runs_of(r)
    lines = ["| method | seconds | response tokens | tokens/s |", "|---|---:|---:|---:|"]
    for key, label in (("direct_vllm", "vLLM `LLM.generate`, one in-process engine, 2 threads"),
                       ("opcd", "opcd: 2 `RolloutWorker` Ray actors × 1 thread, `Sample` conversion, transfer back")):
        lines.append(f"| {label} | {span([x[key]['seconds'] for x in runs], '{:.3f}'.format)} | "
                     f"{span([x[key]['tokens'] for x in runs], INT)} | "
                     f"{span([x[key]['tokens_per_s'] for x in runs], INT)} |")
    c = rollout_check(r)
    verdict_text = "not measured like for like" if c.verdict.status == "not measured" else c.verdict.label
    lines += ["", f"{r['prompts']} prompts; {n_runs(len(runs))} ({machine(r.get('environment'), '`rollout.json`')}). "
              f"opcd / direct = **{span([x['ratio'] for x in runs], times)}**, but with two single-threaded "
              f"engines against one two-threaded engine: the ≥ 0.9× target (the same engines and threads on "
              f"both sides) is **{verdict_text}**."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Weight sync (bench_sync.py -> sync.json; shares of a step from the head-to-heads)
# --------------------------------------------------------------------------------------------------
def sync_shares(toy: dict, smol: dict) -> list[tuple[str, float, float, float]]:
    """``(setting, share, sync s, step s)`` per head-to-head: mean sync seconds / mean step seconds of opcd."""
    out = []
    for name, rep in (("toy model, 16 prompts per step (`bench_vs_trl_toy.py`)", toy),
                      ("SmolLM2-135M, 8 prompts per step (`vs_trl_smollm2.py`)", smol)):
        t = rep["methods"]["opcd"]["timing"]
        step = t.get("mean_s_per_step", t.get("s_per_step"))
        out.append((name, t["phases"]["sync"]["s_per_step"] / step, t["phases"]["sync"]["s_per_step"], step))
    return out


def sync_checks(toy: dict, smol: dict) -> list[Check]:
    return [Check(f"weight sync share of a step, {name.split(' (')[0]}", "< 5%", pct(share),
                  verdict("ratio", [share], "< 0.05", pct)) for name, share, _, _ in sync_shares(toy, smol)]


def _model(path: str) -> str:
    return "shipped toy model" if Path(path).name == "toy-model" else "random wide Llama (`bench_sync.py`)"


@region("sync", "sync.json", "vs_trl_toy.json", "vs_trl_smollm2.json")
def sync(rows: list, toy: dict, smol: dict) -> str:
    names = {"object_store": "object store", "broadcast": "bucketed broadcast (gloo)"}
    lines = ["| model | parameters (fp32) | transport | full push, wall s | slowest in-engine reload, s | MB/s |",
             "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {_model(r['model'])} | {r['bytes'] / 4e6:.2f}M | {names.get(r['method'], r['method'])} | "
                     f"{r['seconds']:.3f} | {r['engine_seconds']:.3f} | {r['MB_per_s']:.0f} |")
    by = {(r["model"], r["method"]): r["seconds"] for r in rows}
    gain = [by[(m, "object_store")] / by[(m, "broadcast")] for m in {r["model"] for r in rows}
            if (m, "object_store") in by and (m, "broadcast") in by]
    toy_push = [r["seconds"] for r in rows if Path(r["model"]).name == "toy-model"]
    shares = sync_shares(toy, smol)
    lines += ["", f"Median of the script's pushes to {rows[0]['workers']} engines; one run "
              f"({machine(None, '`sync.json`')}). The broadcast transport is {span(gain, times)} faster than the "
              f"object store here; its reload column includes the receive. A push of the toy model takes "
              f"{span([1000 * s for s in toy_push], '{:.0f}'.format)} ms.", "",
              "Share of a training step (mean sync seconds / mean step seconds of opcd, steps 2..N, one run each):", ""]
    lines += [f"- {name}: **{pct(share)}** ({num(s, '{:.3f}')} s of {num(step, '{:.3f}')} s)"
              for name, share, s, step in shares]
    lines += ["", "Target < 5% of a step: " + "; ".join(f"{c.benchmark.split(', ', 1)[-1]}: {c.verdict.label}"
                                                    for c in sync_checks(toy, smol)) + "."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Loss memory (bench_loss.py -> loss.json)
# --------------------------------------------------------------------------------------------------
def loss_checks(d: dict) -> list[Check]:
    """The issue's target as written (peak of forward + backward, gradients included), and the
    narrower quantity it was later replaced with (gradients excluded), kept beside it."""
    ch = [r for r in d["results"] if r["method"] == "chunked"]
    t = d["config"]["target_ratio"]
    with_g = [r["ratio_to_chunk_logits"] for r in ch]
    without = [r["ratio_excl_grads"] for r in ch]
    return [Check("chunked loss peak memory, forward + backward (target as set)", f"≤ {t:g}× one chunk's logits",
                  span(with_g, times), verdict("exact", with_g, f"<= {t}", _ratio_fmt)),
            Check("same, leaf gradients excluded (redefined after the measurement)", f"≤ {t:g}× one chunk's logits",
                  span(without, times), verdict("exact", without, f"<= {t}", _ratio_fmt),
                  "not a verdict on the target as set: the head gradient [V, H] alone is one chunk's logits "
                  "when H = chunk rows, so the original target could not be met by any method that returns gradients")]


@region("loss", "loss.json")
def loss(d: dict) -> str:
    by = {(r["T"], r["V"], r["method"]): r for r in d["results"]}
    lines = ["| T | V | naive peak MiB | chunked peak MiB | chunked / one chunk's logits "
             "| same, without the leaf gradients |",
             "|---:|---:|---:|---:|---:|---:|"]
    for s in d["config"]["sizes"]:
        n, c = by[(s["T"], s["V"], "naive")], by[(s["T"], s["V"], "chunked")]
        lines.append(f"| {s['T']} | {s['V']} | {n['peak_extra_mib']:.1f} | {c['peak_extra_mib']:.1f} | "
                     f"{times(c['ratio_to_chunk_logits'])} | {times(c['ratio_excl_grads'])} |")
    with_g, without = loss_checks(d)
    env, cfg = d["env"], d["config"]
    growth = "; ".join(f"V = {v}: T ×{g['T_growth']:g} grows naive ×{g['peak_growth']['naive']:.1f}, chunked "
                       f"×{g['peak_growth']['chunked']:.2f}" for v, g in d["peak_growth_with_T"].items())
    loss_diff = max(a["rel_diff"] for a in d["loss_agreement"])
    grad_diff = max(max(g["hidden_grad_max_rel_diff"], g["head_grad_max_rel_diff"]) for g in d["grad_checks"])
    lines += ["", f"B = {cfg['B']}, H = {cfg['H']}, {cfg['dtype']}, chunk {cfg['chunk_size']} rows; one run, "
              f"{env['cpus']} CPUs ({env['machine']}), torch {env['torch']}, load average "
              f"{env['load_avg_start'][0]:.1f} at the start, {mmss(d['total_seconds'])} in all. Peak memory is "
              "an allocation count: it does not vary between runs. Growth with T: " + growth + ".",
              "", f"- Target as set, **{with_g.target}** for the peak of forward + backward: **{with_g.measured}**: "
              f"**{with_g.verdict.label}**.",
              f"- Redefined after the measurement to exclude the leaf gradients (d head [V, H], d hidden [T, H], "
              f"which every method, naive included, produces): **{without.measured}**, which clears "
              f"{without.target}. Kept beside the original, not in its place: {without.note}.",
              f"- Values agree with naive to a relative {loss_diff:.1e}, gradients to {grad_diff:.1e}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Data path (bench_data_path.py -> data_path.json)
# --------------------------------------------------------------------------------------------------
def data_path_check(d: dict | None) -> Check:
    t = d["target"]["k256_over_k0"] if d else 1.10
    vals = [r["summary"]["k256_over_k0"] for r in runs_of(d)] if d else []
    return Check("rollout with top-256 log-probs vs without (data path)", f"≤ {t:.2f}×", span(vals, times),
                 verdict("ratio", vals, f"<= {t}", _ratio_fmt))


@region("data_path", "data_path.json")
def data_path(d: dict) -> str:
    runs = runs_of(d)
    lines = ["| k | path | generate s | conversion + padding s | total s | peak alloc MB | pickled MB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in runs[0]["rows"]:
        lines.append(f"| {r['k']} | {r['path']} | {r['generate_s']:.3f} | {r['pad_s']:.3f} | {r['total_s']:.3f} | "
                     f"{r['peak_alloc_mb']:.1f} | {r['pickled_mb']:.1f} |")
    c = data_path_check(d)
    lines += ["", f"{n_runs(len(runs))} ({machine(runs[0].get('machine'), '`data_path.json`')}); the table shows the first. "
              f"top-256 / no log-probs: **{c.measured}** (target {c.target}: {c.verdict.label})."]
    sm, tb = runs[0]["summary"], runs[0].get("teacher_bytes_per_token", {})
    per = ", ".join(f"k = {k}: {times(sm[f'k{k}_over_k0_before'])} before, {times(sm[f'k{k}_over_k0'])} after"
                    for k in (16, 256) if f"k{k}_over_k0_before" in sm)
    cost = ", ".join(f"k = {k}: {sm[f'k{k}_before_us_per_token']:,.0f} µs before, {sm[f'k{k}_after_us_per_token']:,.0f} µs after"
                     for k in (16, 256) if f"k{k}_before_us_per_token" in sm)
    lines += ["", f"- Rollout time with the top-k over rollout time without log-probs: {per}.",
              f"- What the top-k adds per generated token, engine included: {cost}.",
              "- The teacher's bytes per response token for SmolLM2 (V = 49,152, d = 576): "
              + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in tb.items())
              + " (full-vocabulary losses now ship hidden states: `opcd/transfer.py`)."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Step time of the default run before and after the loop refactor (benchmarks/step_time.py -> step_time.json)
# --------------------------------------------------------------------------------------------------
@region("step_time", "step_time.json")
def step_time(d: dict) -> str:
    out = []
    for e in d["entries"]:
        lines = [f"**{e['name']}** ({machine(e['machine'])}). {e['how']}", "",
                 "| run | steady steps | mean s/step | median [q1, q3] | rollout | teacher | learner | sync |",
                 "|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in e["runs"]:
            p = r["phases_mean_s"]
            lines.append(f"| {r['label']} | {r['steps']} | {r['mean_s']:.3f} | {r['median_s']:.3f} "
                         f"[{r['q1_s']:.3f}, {r['q3_s']:.3f}] | {p['rollout']:.3f} | {p['teacher']:.3f} | "
                         f"{p['learner']:.3f} | {p['sync']:.3f} |")
        base = e["runs"][0]["mean_s"]
        ratios = ", ".join(f"{r['label']}: {base / r['mean_s']:.2f}×" for r in e["runs"][1:])
        out.append("\n".join(lines) + f"\n\nStep rate against the first row (one run each): {ratios}.")
    return "\n\n".join(out)
