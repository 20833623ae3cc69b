"""Tasks: data in the common record format plus a verifier.

``load_task(cfg)`` returns a :class:`TaskData` for ``cfg.name``, from the loader in :data:`TASKS`:
  * ``toy_rules``: the synthetic rule world (``opcd.tasks.toy_rules``, ``opcd.tasks.toy_world``);
  * ``jsonl``: user records from ``cfg.train_file`` / ``cfg.eval_file`` (``opcd.tasks.jsonl``, ``opcd.tasks.records``);
  * ``sysprompt``: system-prompt distillation on a real instruct model (``opcd.tasks.sysprompt``);
  * ``math``: GSM8K / DAPO-Math rows with experience as the context (``opcd.tasks.math``);
  * ``medical_qa``, ``safety``: labelled questions with a task system prompt (``opcd.tasks.sysprompt_qa``);
  * ``fewshot``: NLI / paraphrase classification with k demonstrations as the context (``opcd.tasks.fewshot``);
  * ``frozenlake``, ``sokoban``: multi-turn text games with experience as the context (``opcd.tasks.games``).

Each task's config schema is ``opcd.config.TASK_SCHEMAS[name]`` (conf/task/<name>.yaml); a config of
another task's schema is refused here, before any data is read.
"""
from __future__ import annotations

from typing import Callable

from opcd.tasks import fewshot, games, jsonl, sysprompt, sysprompt_qa, toy_rules
from opcd.tasks import math as math_task
from opcd.tasks.experience_context import read_experience_file, with_experience
from opcd.tasks.task_data import TaskData

# Task name -> loader (its config -> TaskData). Heavy dependencies (datasets, gymnasium, langdetect,
# math-verify) are imported inside the loaders, so this table is cheap to import.
TASKS: dict[str, Callable[..., TaskData]] = {
    "toy_rules": toy_rules.load,
    "jsonl": jsonl.load,
    "sysprompt": sysprompt.load,
    "math": math_task.load,
    "medical_qa": sysprompt_qa.load,
    "safety": sysprompt_qa.load,
    "fewshot": fewshot.load,
    "frozenlake": games.load,
    "sokoban": games.load,
}


def check_schema(cfg) -> None:
    """Refuse a typed task config whose schema is not ``cfg.name``'s (e.g. ``task=toy_rules task.name=math``),
    which would otherwise fail later on a missing field. Untyped configs (plain dicts) are not checked."""
    from omegaconf import DictConfig, OmegaConf

    from opcd.config import TASK_SCHEMAS, TaskConfig  # here, not at the top: rollout workers import task modules without Hydra

    typ = OmegaConf.get_type(cfg) if isinstance(cfg, DictConfig) else type(cfg)
    want = TASK_SCHEMAS[cfg.name]
    if isinstance(typ, type) and issubclass(typ, TaskConfig) and typ is not want:
        raise ValueError(f"task.name={cfg.name} needs its own config ({want.__name__}), got {typ.__name__}; "
                         f"select the task with task={cfg.name} instead of setting task.name")


def load_task(cfg) -> TaskData:
    """The records and verifier of task ``cfg.name``; ``cfg.experience_file``, when set, replaces the
    task's own contexts with that text (``opcd.tasks.experience_context``)."""
    if cfg.name not in TASKS:
        raise ValueError(f"unknown task.name {cfg.name!r}; expected one of {', '.join(TASKS)}")
    check_schema(cfg)
    data = TASKS[cfg.name](cfg)
    if cfg.experience_file:
        data = with_experience(data, read_experience_file(cfg.experience_file))
    return data


__all__ = ["TASKS", "TaskData", "check_schema", "load_task"]
