"""The experience pipeline, engine-agnostic: solve -> extract -> truncate -> validate -> choose.

:func:`run_pipeline` takes a ``generate`` callable (token-id prompts + sampling settings -> response
texts), so ``python -m opcd.experience`` passes a local vLLM engine and the fast tests a fake one.
"""
from __future__ import annotations

import random
from typing import Callable, Optional, Protocol

from opcd.chat import encode_prompt
from opcd.experience.items import (EXTRACTORS, TRUNCATIONS, Trace, check_choice, demo_items, fill_template,
                                   llm_items, load_template, render, select_best, truncate)

CONTEXT_TASKS = ("toy_rules", "jsonl", "math")  # tasks whose problems the pipeline can draw and validate


class Generate(Protocol):
    def __call__(self, prompts: list[list[int]], *, temperature: float, top_p: float, max_tokens: int,
                 seed: Optional[int]) -> list[str]: ...  # seed: re-seed the sampler first (None: leave it)


def load_problems(cfg) -> tuple[list[dict], list[dict], Callable[[str, dict], bool]]:
    """(training problems, validation records, verifier) for ``cfg.task``.

    Problems are the task's non-retain training records, with the context they are solved with.
    Validation: the toy world generates its validation split of the one distilled rule (no context:
    the candidate will be the only context); ``jsonl`` reads ``cfg.validation_file``; ``math`` reads it
    too, or else takes the task's evaluation questions (``task.eval_file``) without their context.
    """
    from opcd.tasks import load_task, toy_world
    from opcd.tasks.records import DatasetError, load_jsonl

    check_choice(cfg.extractor, EXTRACTORS, "extractor")  # config errors before any engine starts
    check_choice(cfg.truncation, TRUNCATIONS, "truncation")
    if cfg.extractor == "llm":
        load_template(cfg.extract_prompt_file)
    task = cfg.task
    if task.name not in CONTEXT_TASKS:
        raise ValueError(f"python -m opcd.experience supports task={' | '.join(CONTEXT_TASKS)}, got {task.name!r}")
    if task.experience_file:
        raise ValueError("task.experience_file must be null here: this pipeline writes an experience, it reads none")
    if cfg.n_problems <= 0 or cfg.candidates <= 0:
        raise ValueError(f"n_problems and candidates must be positive, got {cfg.n_problems} and {cfg.candidates}")
    data = load_task(task)
    problems = [r for r in data.train if not r["metadata"].get("retain")]
    if task.name == "toy_rules":
        if len(task.distill_rules) != 1:
            raise ValueError(f"a toy-world experience is about one rule; set task.distill_rules=[<rule>], "
                             f"got {list(task.distill_rules)}")
        if cfg.n_validation <= 0:
            raise ValueError(f"n_validation must be positive for the toy world, got {cfg.n_validation}")
        validation = toy_world.generate("validation", rules=list(task.distill_rules), n_per_rule=cfg.n_validation,
                                        context_kinds=("none",), seed=task.seed)
    else:
        if cfg.validation_file:
            validation = load_jsonl(cfg.validation_file)
        elif task.name == "math" and data.eval:  # the evaluation questions, asked without any experience
            validation = [r for r in data.eval if r["metadata"]["context_kind"] == "none"]
        else:
            raise DatasetError(f"task={task.name} needs validation_file=<records.jsonl> to score the candidates on"
                               + (" (or task.eval_file=<rows> with held-out questions)" if task.name == "math" else ""))
        validation = validation[:cfg.n_validation] if cfg.n_validation > 0 else validation
    return problems, validation, data.verify


def accuracy(records: list[dict], context: str, tok, generate: Generate, verify, max_tokens: int) -> float:
    """Greedy exact-match accuracy in [0, 1] on ``records`` with ``context`` as every record's context."""
    texts = generate([encode_prompt(tok, r["prompt"], context) for r in records], temperature=0.0, top_p=1.0,
                     max_tokens=max_tokens, seed=None)
    return sum(verify(t, r) for t, r in zip(texts, records, strict=True)) / len(records)


def _length_checked(generate: Generate, max_len: int) -> Generate:
    """``generate`` that first refuses prompts of ``max_len`` tokens or more with a one-line fix (vLLM's
    own over-length error is a traceback that does not say which setting made the prompt long)."""
    def checked(prompts, **kw):
        longest = max(map(len, prompts), default=0)
        if longest >= max_len:
            raise ValueError(f"a {longest}-token prompt does not fit model.max_model_len={max_len}; shorten the "
                             "extraction prompt or max_experience_tokens, or raise model.max_model_len")
        return generate(prompts, **kw)
    return checked


def run_pipeline(cfg, problems: list[dict], validation: list[dict], verify, tok, generate: Generate,
                 progress: bool = True) -> dict:
    """Build ``cfg.candidates`` experience texts, score each on ``validation``, and return the report
    (``report["experience"]`` is the chosen text, ``report["candidates"][i]["accuracy"]`` the scores)."""
    from tqdm import tqdm

    check_choice(cfg.extractor, EXTRACTORS, "extractor")
    check_choice(cfg.truncation, TRUNCATIONS, "truncation")
    template = load_template(cfg.extract_prompt_file) if cfg.extractor == "llm" else ""
    need = cfg.n_problems * cfg.candidates
    if len(problems) < need:
        raise ValueError(f"{cfg.candidates} candidates x {cfg.n_problems} problems need {need} training problems, "
                         f"the task has {len(problems)} (raise task.train_size or lower n_problems)")
    # Disjoint subsets: candidates differ in what was solved, not only in sampling noise.
    order = list(range(len(problems)))
    random.Random(cfg.seed).shuffle(order)
    r = cfg.rollout
    generate = _length_checked(generate, cfg.model.max_model_len)

    def count_tokens(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    candidates = []
    bar = tqdm(range(cfg.candidates), desc="experience candidates", unit="cand", disable=not progress)
    for i in bar:
        subset = [problems[j] for j in order[i * cfg.n_problems:(i + 1) * cfg.n_problems]]
        prompts = [encode_prompt(tok, p["prompt"], p["context"] if cfg.use_context else "") for p in subset]
        answers = generate(prompts, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                           seed=cfg.seed + i)
        traces = [Trace(p["prompt"], a.strip(), bool(verify(a, p))) for p, a in zip(subset, answers, strict=True)]
        if cfg.extractor == "demos":
            items = demo_items(traces)
        else:  # the model writes its own lessons: greedy, so an item depends only on its trace
            texts = generate([encode_prompt(tok, fill_template(template, t)) for t in traces], temperature=0.0,
                             top_p=1.0, max_tokens=cfg.extract_max_tokens, seed=None)
            items = llm_items(traces, texts)
        kept = truncate(items, cfg.extractor, count_tokens, cfg.max_experience_tokens, cfg.truncation)
        text = render(kept, cfg.extractor)
        acc = accuracy(validation, text, tok, generate, verify, r.max_tokens) if text else None
        candidates.append({"index": i, "seed": cfg.seed + i, "problems": len(traces),
                           "solve_accuracy": sum(t.correct for t in traces) / len(traces), "items": len(items),
                           "kept_items": len(kept), "tokens": count_tokens(text), "accuracy": acc, "text": text})
        bar.set_postfix(val_acc="-" if acc is None else f"{acc:.3f}")
    chosen = select_best(candidates)
    baseline = accuracy(validation, "", tok, generate, verify, r.max_tokens)
    return {"extractor": cfg.extractor, "truncation": cfg.truncation,
            "max_experience_tokens": cfg.max_experience_tokens, "n_problems": cfg.n_problems,
            "n_validation": len(validation), "use_context": cfg.use_context,
            "no_context_accuracy": baseline, "chosen": chosen, "chosen_accuracy": candidates[chosen]["accuracy"],
            "experience": candidates[chosen]["text"], "candidates": candidates}


def format_report(report: dict) -> str:
    """A fixed-width table of the candidates (accuracies in percent, lengths in tokens)."""
    lines = [f"{'cand':>4} {'solved':>8} {'items':>6} {'kept':>5} {'tokens':>7} {'val acc':>8}", "-" * 43]
    for c in report["candidates"]:
        acc = "-" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}%"
        mark = " <- chosen" if c["index"] == report["chosen"] else ""
        lines.append(f"{c['index']:>4} {100 * c['solve_accuracy']:>7.1f}% {c['items']:>6} {c['kept_items']:>5} "
                     f"{c['tokens']:>7} {acc:>8}{mark}")
    lines.append(f"no context: {100 * report['no_context_accuracy']:.1f}% on {report['n_validation']} "
                 "validation problems")
    return "\n".join(lines)
