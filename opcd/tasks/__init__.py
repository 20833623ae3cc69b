"""Tasks: data in the common record format plus a verifier.

``load_task(cfg)`` returns a :class:`TaskData` for ``cfg.name``:
  * ``toy_rules``: the synthetic rule world (``opcd.tasks.toy_world``), generated deterministically;
  * ``jsonl``: user records from ``cfg.train_file`` / ``cfg.eval_file`` (see ``opcd.tasks.records``);
  * ``sysprompt``: system-prompt distillation on a real instruct model (``opcd.tasks.sysprompt``);
  * ``math``: GSM8K / DAPO-Math rows with experience as the context (``opcd.tasks.math``);
  * ``medical_qa``, ``safety``: labelled questions with a task system prompt (``opcd.tasks.sysprompt_qa``);
  * ``fewshot``: NLI / paraphrase classification with k demonstrations as the context (``opcd.tasks.fewshot``);
  * ``frozenlake``, ``sokoban``: multi-turn text games with experience as the context (``opcd.tasks.games``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from opcd.tasks import toy_world
from opcd.tasks.records import DatasetError, load_jsonl


@dataclass
class TaskData:
    train: list[dict]  # records the student is trained on (their contexts go to the teacher)
    eval: list[dict]  # records evaluated with and without context
    verify: Callable[[str, dict], bool]  # (response text, record) -> correct? (games: the episode transcript)
    make_env: Optional[Callable[[dict], object]] = None  # multi-turn tasks: record -> environment (opcd.rollout.episodes)
    max_turns: int = 1  # multi-turn tasks: student turns per episode


def _exact(response: str, record: dict) -> bool:
    return toy_world.verify(response, record["answer"])


def load_task(cfg) -> TaskData:
    data = _load_task(cfg)
    if getattr(cfg, "experience_file", None):
        # An experience text (python -m opcd.experience) replaces the task's own contexts; the rule
        # (non-retain training records, context-bearing evaluation records) is in opcd.experience.context.
        from opcd.experience.context import read_experience_file, with_experience

        data = with_experience(data, read_experience_file(cfg.experience_file))
    return data


def _load_task(cfg) -> TaskData:
    if cfg.name == "toy_rules":
        for r in cfg.distill_rules:
            toy_world.get_rule(r)  # clear error on a typo
        if cfg.context_kind not in ("system", "demos"):
            raise ValueError(f"task.context_kind must be system or demos, got {cfg.context_kind!r}")
        train = toy_world.generate("train", rules=list(cfg.distill_rules), context_kinds=(cfg.context_kind,),
                                   n_per_rule=cfg.train_size, seed=cfg.seed, k_demos=cfg.k_demos)
        others = [r.name for r in toy_world.RULES if r.name not in cfg.distill_rules]
        n_retain = round(cfg.retain_ratio * len(train) / max(1, len(others)))
        if n_retain and others:
            # Retain records keep the context on the student side as well: their reverse KL anchors the
            # with-context behaviour of the other rules to the frozen teacher while the distilled rule's
            # context is being removed (without them a 1M-parameter student turns into a reverser).
            for rec in toy_world.generate("train", rules=others, context_kinds=(cfg.context_kind,),
                                          n_per_rule=n_retain, seed=cfg.seed, k_demos=cfg.k_demos):
                rec["metadata"]["retain"] = True
                train.append(rec)
        # Distilled rules: every context kind (no-context accuracy is the target). Other rules: with
        # context only, to see whether distillation harmed what the context still has to do.
        evals = []
        for rec in toy_world.generate("test", n_per_rule=cfg.eval_n_per_rule, seed=cfg.seed, k_demos=cfg.k_demos):
            distilled = rec["metadata"]["rule"] in cfg.distill_rules
            if distilled or rec["metadata"]["context_kind"] == cfg.context_kind:
                rec["metadata"]["group"] = "distilled" if distilled else "other"
                evals.append(rec)
        # Out of distribution: the distilled rules described by the paraphrase held out of pretraining.
        for rec in toy_world.generate("test", rules=list(cfg.distill_rules), context_kinds=("system",),
                                      n_per_rule=cfg.eval_n_per_rule, seed=cfg.seed, paraphrases="heldout"):
            rec["metadata"].update(group="distilled", context_kind="system_heldout")
            evals.append(rec)
        return TaskData(train, evals, _exact)
    if cfg.name == "jsonl":
        if not cfg.train_file:
            raise DatasetError("task=jsonl needs task.train_file=<path to records.jsonl>")
        train = load_jsonl(cfg.train_file)
        evals = []
        # Each evaluation record is scored twice: with its context and without it (the distilled view).
        for rec in load_jsonl(cfg.eval_file) if cfg.eval_file else []:
            evals.append({**rec, "metadata": {**rec["metadata"], "group": "eval", "context_kind": "context"}})
            evals.append({**rec, "context": "", "metadata": {**rec["metadata"], "group": "eval", "context_kind": "none"}})
        return TaskData(train, evals, _exact)
    if cfg.name == "sysprompt":
        from opcd.tasks import sysprompt

        others = list(cfg.other_prompts)
        sysprompt.check_names(cfg.distill_prompt, others)
        sysprompt.detect_language("hello world")  # fail now (with the pip command) if langdetect is missing
        train = sysprompt.train_records(cfg.distill_prompt, cfg.train_size, others, cfg.retain_ratio)
        # Periodic evaluation: the distilled prompt with and without its system prompt, the others with theirs.
        evals = sysprompt.eval_records(cfg.distill_prompt, others, n=cfg.eval_n_per_rule, facts=True)
        return TaskData(train, evals, sysprompt.verify)
    # Real-data tasks: rows from JSONL / Parquet / a Hugging Face dataset (opcd.tasks.tables).
    if cfg.name == "math":
        from opcd.tasks import math as math_task

        return math_task.load(cfg)
    if cfg.name in ("medical_qa", "safety"):
        from opcd.tasks import sysprompt_qa

        return sysprompt_qa.load(cfg)
    if cfg.name == "fewshot":
        from opcd.tasks import fewshot

        return fewshot.load(cfg)
    if cfg.name in ("frozenlake", "sokoban"):
        from opcd.tasks import games

        return games.load(cfg)
    raise ValueError(f"unknown task.name {cfg.name!r}; expected toy_rules, jsonl, sysprompt, math, medical_qa, "
                     "safety, fewshot, frozenlake or sokoban")
