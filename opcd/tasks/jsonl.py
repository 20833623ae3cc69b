"""Task ``jsonl``: the user's own records from ``task.train_file`` / ``task.eval_file``
(format and checks: ``opcd.tasks.records``), verified by exact match on ``answer``."""
from __future__ import annotations

from opcd.tasks.records import DatasetError, load_jsonl
from opcd.tasks.task_data import TaskData
from opcd.tasks.toy_rules import verify_exact


def load(cfg) -> TaskData:
    """``load_task`` for ``task=jsonl`` (``opcd.config.JsonlTaskConfig``)."""
    if not cfg.train_file:
        raise DatasetError("task=jsonl needs task.train_file=<path to records.jsonl>")
    train = load_jsonl(cfg.train_file)
    evals = []
    # Each evaluation record is scored twice: with its context and without it (the distilled view).
    for rec in load_jsonl(cfg.eval_file) if cfg.eval_file else []:
        evals.append({**rec, "metadata": {**rec["metadata"], "group": "eval", "context_kind": "context"}})
        evals.append({**rec, "context": "", "metadata": {**rec["metadata"], "group": "eval", "context_kind": "none"}})
    return TaskData(train, evals, verify_exact)
