"""Which prompt goes to whom: every data-path decision of a step, as pure functions (no Ray, no engine).

The rule of context distillation, in one place:

- the **student** answers a record *without* its context (except retain records, whose context it
  keeps: they anchor behaviour that must survive distillation);
- off-policy methods let the **teacher** answer instead, *with* the context;
- whoever answered, the teacher **scores** ``[context prompt; response]`` and the learner trains on
  ``[student prompt; response]`` against those scores;
- with ``n`` samples per prompt, sample ``j`` answers prompt ``idx[j // n]`` (prompt-major).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

Render = Callable[[dict, bool], list[int]]  # (record, with_context) -> prompt token ids


@dataclass(frozen=True)
class PromptViews:
    """Both renderings of every training record, index-aligned with the records."""

    student: list[list[int]]  # what the student is asked: no context (retain records: with it)
    context: list[list[int]]  # what the teacher sees: with the context
    room: list[int]  # tokens a response may take so that both views of it fit the context window


def student_sees_context(record: dict) -> bool:
    """Only retain records (``metadata.retain``) keep their context on the student's side."""
    return bool(record.get("metadata", {}).get("retain"))


def prompt_views(records: Sequence[dict], render: Render, max_model_len: int) -> PromptViews:
    """The student's and the teacher's view of each record, and the room left for its response."""
    context = [render(r, True) for r in records]
    student = [c if student_sees_context(r) else render(r, False) for r, c in zip(records, context)]
    room = [max_model_len - max(len(a), len(b)) for a, b in zip(student, context)]
    return PromptViews(student, context, room)


def draw_prompts(order: list[int], rng: random.Random, n_records: int, k: int) -> tuple[list[int], list[int]]:
    """The next ``k`` record indices and the rest of the epoch's order.

    Epoch-wise shuffling: no record repeats before every one was used; a new epoch's permutation is
    appended (drawn from ``rng``) whenever fewer than ``k`` are left. ``order`` is not modified.
    """
    order = list(order)
    while len(order) < k:
        perm = list(range(n_records))
        rng.shuffle(perm)
        order += perm
    return order[:k], order[k:]


def student_answers(rng: random.Random, p_student: float) -> bool:
    """The step's coin: the student answers (on-policy) with probability ``p_student``."""
    return rng.random() < p_student


def rollout_prompts(views: PromptViews, idx: Sequence[int], on_policy: bool) -> list[list[int]]:
    """What the answering policy is asked: the student's views, or the teacher's (with context)."""
    source = views.student if on_policy else views.context
    return [source[i] for i in idx]


def sample_rows(idx: Sequence[int], n: int) -> list[int]:
    """The record index of each of the ``len(idx) * n`` samples (prompt-major: ``idx[j // n]``)."""
    return [i for i in idx for _ in range(n)]


def teacher_sequences(views: PromptViews, rows: Sequence[int], responses: Sequence[list[int]]) -> list[list[int]]:
    """What the teacher scores: each response after its record's *context* prompt."""
    return [views.context[i] + list(r) for i, r in zip(rows, responses)]


def learner_prompts(views: PromptViews, rows: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
    """The (student, context) prompt of each sample's record, for ``batch.build_learn_batch``."""
    return [views.student[i] for i in rows], [views.context[i] for i in rows]


def push_due(step: int, sync_every: int, evaluating: bool) -> bool:
    """Whether the engines get the learner's weights after optimizer ``step`` (1-based): every
    ``sync_every`` steps, and always before an evaluation (it samples from the engines)."""
    return evaluating or step % sync_every == 0


def eval_due(step: int, steps: int, eval_every: int) -> bool:
    """Whether optimizer ``step`` (1-based) ends with an evaluation: every ``eval_every`` steps and the last."""
    return step == steps or bool(eval_every and step % eval_every == 0)


def save_due(step: int, steps: int, save_every: int) -> bool:
    """Whether optimizer ``step`` (1-based) ends with a checkpoint: every ``save_every`` steps and the last."""
    return step == steps or bool(save_every and step % save_every == 0)
