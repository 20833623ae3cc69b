"""System-prompt evaluation with vLLM: how often does a model do what a system prompt asks, with and
without that prompt? Shared by opcd and TRL runs in ``benchmarks/vs_trl_smollm2.py``.

    python -m opcd.eval.sysprompt --model ~/.cache/opcd/SmolLM2-135M-Instruct --out base.json
    python -m opcd.eval.sysprompt --model A --model B --conditions none,french --out ab.json
    python -m opcd.eval.sysprompt --spec spec.json --out all.json   # [{"label", "path", "conditions"}]

For each model it samples every held-out user prompt (``opcd.tasks.sysprompt_data.EVAL_PROMPTS``)
``samples`` times at temperature 0.7, top-p 0.9, up to 128 new tokens, under each *condition*:
``none`` (no system prompt; the chat template's default system turn applies) or the name of a system
prompt (``opcd.tasks.sysprompt.SYSTEM_PROMPTS``) given as the system message. A system prompt's rate
*with* it is its verifier over its own condition; its rate *without* it is its verifier over the
``none`` samples. Rates carry n and a 95% Wilson interval over samples, and the same rate per prompt
with its 95% interval over prompts (``prompt_lo``/``prompt_hi``: the one to report, since samples of
one prompt are not independent); ``harm`` compares two models' rates (with a paired bootstrap over
prompts). Generation and verification are the shared evaluator's (``opcd.eval.evaluator``); the
settings are its ``EvalSettings`` with this evaluator's defaults (``SyspromptSettings``).

Several models share one engine: after the first, weights are reloaded in place (same architecture),
and the engine's sampling RNG is re-seeded before each (model, condition), so a model's numbers do
not depend on which models were evaluated before it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from opcd.eval import evaluator  # its EvalSettings is not re-exported: SyspromptSettings has other defaults
from opcd.eval.evaluator import generate_answers, local_generate, verify_answers, write_report
from opcd.eval.metrics import Result, per_prompt
from opcd.eval.stats import Z95, paired_bootstrap, prompt_interval, prompt_rates, wilson_interval

NONE = "none"  # the condition without any system prompt
Answers = tuple[list[dict], list]  # one condition's records and their answers (Samples), prompt-major


@dataclass
class SyspromptSettings(evaluator.EvalSettings):
    """The shared evaluator's settings with this evaluator's sampling defaults, plus its engine."""

    max_tokens: int = 128  # new tokens per reply
    temperature: float = 0.7  # sampling temperature
    top_p: float = 0.9  # nucleus threshold
    samples: int = 2  # samples per prompt and condition
    seed: int = 0  # engine seed, re-applied before every (model, condition)
    prompts: int = 60  # held-out user prompts (the first N of eval_set's)
    eval_set: str = "v1"  # which held-out prompts (opcd.tasks.sysprompt.EVAL_SETS): v1 (60) | heldout240 (252)
    max_model_len: int = 512  # engine context length
    threads: int = 2  # torch threads of the engine
    kv_cache_gb: int = 1  # vLLM CPU KV cache
    engine: str = "vllm_cpu"  # vllm_cpu | vllm_cuda


# --------------------------------------------------------------------------------------------------
# Statistics (pure)
# --------------------------------------------------------------------------------------------------
def proportion(hits, z: float = Z95) -> dict:
    """``{"rate", "k", "n", "lo", "hi"}`` of a list of booleans (rate None when empty)."""
    hits = [bool(h) for h in hits]
    k, n = sum(hits), len(hits)
    lo, hi = wilson_interval(k, n, z)
    return {"rate": k / n if n else None, "k": k, "n": n, "lo": lo, "hi": hi}


def difference(before: dict, after: dict, z: float = Z95) -> dict:
    """``before.rate - after.rate`` with Newcombe's hybrid-score 95% interval (independent samples).

    Used for Harm: a positive value is a drop. The two evaluations share their prompts, so treating
    them as independent gives a conservative (wider) interval.
    """
    p1, p2 = before["rate"], after["rate"]
    if p1 is None or p2 is None:
        return {"diff": None, "lo": None, "hi": None}
    l1, u1 = wilson_interval(before["k"], before["n"], z)
    l2, u2 = wilson_interval(after["k"], after["n"], z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"diff": d, "lo": max(-1.0, lo), "hi": min(1.0, hi)}


def condition_records(prompts: list[str], condition: str, system_prompts: dict[str, str]) -> list[dict]:
    """The user ``prompts`` as evaluator records under ``condition`` (its system prompt as the context;
    none for ``none``)."""
    context = "" if condition == NONE else system_prompts[condition]
    return [{"prompt": p, "context": context, "answer": None,
             "metadata": {"group": "sysprompt", "context_kind": condition}} for p in prompts]


def rate(results: list[Result]) -> dict:
    """``proportion`` over the samples, plus the same rate over prompts: ``"prompts"``, ``"per_prompt"``
    (each prompt's rate over its samples, in prompt order) and its interval ``"prompt_lo"``,
    ``"prompt_hi"`` (``opcd.eval.stats.prompt_interval``: the one to report, samples of a prompt are
    not independent)."""
    groups = per_prompt(results)
    over = prompt_interval(groups)
    return {**proportion([r.correct for r in results]), "prompts": over["prompts"],
            "per_prompt": prompt_rates(groups), "prompt_lo": over["lo"], "prompt_hi": over["hi"]}


def score(answers: dict[str, Answers], verifiers: dict[str, Callable[[str], bool]],
          samples: int = 1) -> dict[str, dict]:
    """Rates per system prompt from the answers of each condition.

    ``answers[condition]`` are the records and answers under ``condition`` (``none`` or a system
    prompt's name), ``samples`` answers per record. A system prompt's ``with`` rate is its verifier over
    its own condition, its ``without`` rate its verifier over the ``none`` answers. Returns
    ``{name: {"with": rate | None, "without": rate | None}}`` for every verifier.
    """
    return {name: {"with": _judge(answers[name], ok, samples) if name in answers else None,
                   "without": _judge(answers[NONE], ok, samples) if NONE in answers else None}
            for name, ok in verifiers.items()}


def _judge(answers: Answers, ok: Callable[[str], bool], samples: int) -> dict:
    records, replies = answers
    return rate(verify_answers(records, replies, lambda text, _record: ok(text), samples))


def harm(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per system prompt and condition (with / without): drop from ``before`` to ``after`` rates."""
    out = {}
    for name in before:
        if name not in after:
            continue
        out[name] = {c: _drop(before[name][c], after[name][c])
                     for c in ("with", "without") if before[name].get(c) and after[name].get(c)}
    return out


def _drop(before: dict, after: dict) -> dict:
    """``difference``, plus (when both rates were measured on the same prompts) the paired bootstrap
    over prompts of before - after (``"paired"``: diff, lo, hi, p)."""
    d = difference(before, after)
    a, b = before.get("per_prompt"), after.get("per_prompt")
    if a is not None and b is not None and len(a) == len(b):
        d["paired"] = paired_bootstrap(a, b)
    return d


def fmt_rate(p: dict | None) -> str:
    """``"38.3% [30.1, 47.2] n=120"`` (percent, 95% interval)."""
    if not p or p.get("rate") is None:
        return "–"
    return f"{100 * p['rate']:.1f}% [{100 * p['lo']:.1f}, {100 * p['hi']:.1f}] n={p['n']}"


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------
def _arch(path: str) -> dict:
    cfg = json.loads((Path(path) / "config.json").read_text())
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "intermediate_size", "tie_word_embeddings")
    return {k: cfg.get(k) for k in keys}


def _weights(path: str):
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights to evaluate")
    for f in files:
        yield from load_file(str(f)).items()


def evaluate_models(models: list[dict], settings: SyspromptSettings | None = None,
                    system_prompts: dict[str, str] | None = None,
                    verifiers: dict[str, Callable[[str], bool]] | None = None,
                    log: Callable[[str], None] = print) -> dict[str, dict]:
    """Evaluate ``models`` = ``[{"label", "path", "conditions": ["none", "french", ...]}]``.

    Returns ``{label: {"path", "conditions": {cond: {"n", "tokens", "seconds", "examples"}},
    "rates": score(...), "seconds"}}``. Conditions default to ``none`` plus every system prompt.
    """
    from opcd.modeling import load_tokenizer
    from opcd.engine import make_llm, reload_weights
    from opcd.tasks import sysprompt

    s = settings or SyspromptSettings()
    system_prompts = system_prompts or sysprompt.SYSTEM_PROMPTS
    verifiers = verifiers or {n: sysprompt.VERIFIERS[n] for n in system_prompts}
    prompts = sysprompt.eval_prompts(s.eval_set)[:s.prompts]
    llm, arch, tok, results = None, None, None, {}
    for m in models:
        t_model = time.perf_counter()
        label, path = m["label"], str(Path(m["path"]).expanduser())
        conds = list(m.get("conditions") or [NONE, *system_prompts])
        bad = [c for c in conds if c != NONE and c not in system_prompts]
        if bad:
            raise ValueError(f"unknown condition(s) {bad}; expected {NONE!r} or one of {sorted(system_prompts)}")
        if llm is None or _arch(path) != arch:
            llm = None  # drop the old engine before building another
            tok = load_tokenizer(path)
            llm = make_llm(path, s.engine, max_model_len=s.max_model_len, seed=s.seed, threads=s.threads,
                           kv_cache_gb=s.kv_cache_gb)
            arch = _arch(path)
        else:
            reload_weights(llm, _weights(path))
        generate = local_generate(llm, seed=s.seed)  # re-seeded before each condition: order-independent
        answers, info = {}, {}
        for c in conds:
            recs = condition_records(prompts, c, system_prompts)
            t0 = time.perf_counter()
            out = generate_answers(generate, tok, recs, s)
            dt = time.perf_counter() - t0
            answers[c] = (recs, out)
            n_tok = sum(len(o.response_ids) for o in out)
            info[c] = {"n": len(out), "tokens": n_tok, "seconds": dt, "examples": [o.text for o in out[:3]]}
            log(f"[eval] {label}: {c:<8} {len(out)} replies, {n_tok} tokens in {dt:.1f} s ({n_tok / max(dt, 1e-9):.0f} tok/s)")
        rates = score(answers, {n: verifiers[n] for n in system_prompts}, s.samples)
        results[label] = {"path": path, "conditions": info, "rates": rates,
                          "seconds": time.perf_counter() - t_model}
    return results


def main(argv: list[str] | None = None) -> int:
    from opcd.tasks.sysprompt import SYSTEM_PROMPTS

    ap = argparse.ArgumentParser(description="System-prompt following rates (with / without the prompt) of "
                                 "HF model directories, sampled with vLLM.")
    ap.add_argument("--model", action="append", default=[], help="model directory (repeatable)")
    ap.add_argument("--spec", help='JSON file: [{"label": ..., "path": ..., "conditions": [...]}, ...]')
    ap.add_argument("--conditions", default="", help=f"comma list of {NONE} and {', '.join(SYSTEM_PROMPTS)} "
                    "(default: all)")
    ap.add_argument("--out", required=True, help="where the JSON result is written")
    d = SyspromptSettings()
    for f, v in asdict(d).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v, help=f"default {v}")
    args = ap.parse_args(argv)
    try:
        settings = SyspromptSettings(**{f: getattr(args, f) for f in asdict(d)})
    except ValueError as e:
        ap.error(str(e))
    conds = [c for c in args.conditions.split(",") if c]
    models = json.loads(Path(args.spec).read_text()) if args.spec else []
    for p in args.model:
        label = p if all(m["label"] != p for m in models) else f"{p}#{len(models) + 1}"
        models.append({"label": label, "path": p, "conditions": conds})
    if not models:
        ap.error("give --model DIR (repeatable) or --spec FILE")
    try:
        res = evaluate_models(models, settings)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"opcd.eval.sysprompt: error: {e}", file=sys.stderr)
        return 1
    for label, r in res.items():
        print(label)
        for name, rr in r["rates"].items():
            print(f"  {name:<8} with: {fmt_rate(rr['with']):<32} without: {fmt_rate(rr['without'])}")
    write_report(args.out, settings, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
