"""An experience file as the teacher's context: what ``task.experience_file`` does to a task's data.

``load_task`` calls :func:`with_experience` when ``task.experience_file`` is set (``python -m
opcd.experience`` writes such a file). The rule is the same for every task, so a task needs no code
of its own to take an experience:

* training records: every record except *retain* ones gets the experience as its context (retain
  records anchor *other* behaviours with their own contexts, which must stay as they are);
* evaluation records: every record with a non-empty context that is neither retain nor in group
  ``other`` gets the experience and ``context_kind = "experience"`` (the loop logs it as
  ``eval/<group>/experience``, paired with the ``none`` records for Harm / BothCorrect). Records that
  then ask the same question twice (the toy world's system/demos/held-out variants of one prompt)
  are kept once. No-context records stay empty: they measure the distilled behaviour.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from opcd.tasks.records import DatasetError

EXPERIENCE_KIND = "experience"  # context_kind of evaluation records that carry the experience


def read_experience_file(path: str) -> str:
    """The experience text of ``path``; trailing newlines are dropped (an editor's final newline would
    otherwise become part of the teacher's context). Raises DatasetError if missing or empty."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"task.experience_file {path!r} does not exist; write one with python -m opcd.experience "
                           "or set task.experience_file=null")
    text = p.read_text().rstrip("\n")
    if not text.strip():
        raise DatasetError(f"task.experience_file {path!r} is empty; it must hold the experience text")
    return text


def with_experience(data, text: str):
    """A copy of ``data`` (a ``TaskData``) whose context-bearing records use ``text`` as their context."""
    train = [rec if rec["metadata"].get("retain") else {**rec, "context": text} for rec in data.train]
    evals, seen = [], set()
    for rec in data.eval:
        m = rec["metadata"]
        if rec["context"] and not m.get("retain") and m.get("group") != "other":
            rec = {**rec, "context": text, "metadata": {**m, "context_kind": EXPERIENCE_KIND}}
            key = (m.get("group"), m.get("rule"), rec["prompt"], rec.get("answer"))
            if key in seen:
                continue
            seen.add(key)
        evals.append(rec)
    return replace(data, train=train, eval=evals)
