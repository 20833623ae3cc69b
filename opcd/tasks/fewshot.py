"""Few-shot demonstrations as the context (task ``fewshot``), as in "Efficient LLM Context Distillation"
(2024): NLI (RTE / MNLI: premise + hypothesis -> entailment / not_entailment ...) or paraphrase
(QQP / MRPC: two sentences -> yes / no) classification.

Every row is rendered with ``task.template`` (``{column}`` placeholders, e.g.
``"Premise: {premise}\\nHypothesis: {hypothesis}\\nAnswer:"``); a demonstration is that text followed by
the row's label word. The teacher's context is ``task.n_shots`` demonstrations sampled (seeded by
``task.seed``) from the training rows -- a fresh sample for every record, or one shared set when
``task.demos_fixed`` (its rows are then not used as training queries, so no query sees its own
answer). A record's own row is never among its demonstrations. The student sees the query alone.

Labels are 0-based indices into ``task.label_words`` (GLUE's integer labels) or the words themselves;
``verify`` reads the label word the reply starts with (case, spaces, ``-``/``_`` and punctuation
ignored; ``not entailment`` is not ``entailment``), or the one right after the last "answer (is)".
"""
from __future__ import annotations

import random
import re
import string

from opcd.tasks import tables
from opcd.tasks.records import DatasetError
from opcd.tasks.task_data import TaskData

DEFAULT_TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:"
DEFAULT_LABEL_WORDS = ["entailment", "not_entailment"]
DEFAULT_LABEL_COLUMN = "label"


def tokens(text: str) -> list[str]:
    """Lower-case alphanumeric tokens: ``Not-entailment.`` -> ``['not', 'entailment']``."""
    return re.findall(r"[a-z0-9]+", text.lower())


def placeholders(template: str) -> list[str]:
    """The column names a template's ``{...}`` fields refer to (each once, in order)."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise DatasetError(f"task.template {template!r} is not a valid template ({e}); use {{column}} "
                           "placeholders and double braces {{ }} for literal ones") from None
    if not names or any(not n for n in names):
        raise DatasetError(f"task.template {template!r} needs named {{column}} placeholders, e.g. {DEFAULT_TEMPLATE!r}")
    return list(dict.fromkeys(names))


def check_label_words(words: list[str]) -> list[str]:
    """Label words must be at least two, non-empty and distinct after normalisation."""
    keys = [tuple(tokens(w)) for w in words]
    if len(words) < 2 or not all(keys) or len(set(keys)) != len(keys):
        raise DatasetError(f"task.label_words {words!r} must be two or more distinct, non-empty words "
                           "(label 0, 1, ... in order)")
    return list(words)


def label_word(value, words: list[str], where: str) -> str:
    """The label word of a row's label: a 0-based index (int or digit string) or the word itself."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            hits = [w for w in words if tokens(w) == tokens(value)]
            if hits:
                return hits[0]
    if isinstance(value, int) and 0 <= value < len(words):
        return words[value]
    hint = " (GLUE test splits are unlabelled, label -1: use the validation split)" if value == -1 else ""
    raise DatasetError(f"{where}: label {value!r} matches none of task.label_words {words}{hint}; labels are "
                       "0-based indices into task.label_words or the words themselves")


def examples(rows: tables.Rows, template: str, answer_column: str, words: list[str]) -> list[tuple[str, str, str]]:
    """``(where, query text, label word)`` for every row."""
    fields = placeholders(template)
    out = []
    for where, row in rows:
        values = {}
        for f in fields:
            if f not in row:
                raise DatasetError(f"{where}: missing column {f!r}, which task.template uses (the row has "
                                   f"{sorted(row)}); rename the placeholder in task.template")
            values[f] = tables.as_text(tables.column(row, f, where, "template"), where, f).strip()
        label = label_word(tables.column(row, answer_column, where, "answer_column"), words, where)
        out.append((where, template.format_map(values).strip(), label))
    return out


def demos_context(pool: list[tuple[str, str, str]], idx: list[int]) -> str:
    """The context: one demonstration (query text, a space, the label word) per index, blank-line separated."""
    return "\n\n".join(f"{pool[i][1]} {pool[i][2]}" for i in idx)


def sample(n: int, k: int, rng: random.Random, exclude: int | None = None) -> list[int]:
    """``k`` distinct indices of ``range(n)`` other than ``exclude`` (O(k): the pool may be MNLI-sized)."""
    idx = [i for i in rng.sample(range(n), min(n, k + 1)) if i != exclude]
    return idx[:k]


def predicted(response: str, words: list[str]) -> str | None:
    """The label word the reply gives: the one its first line starts with, else the one right after its
    last "answer" ("answer is X", "Answer: X"); longer words first, so "not entailment" wins over "entailment"."""
    text = response.rsplit("</think>", 1)[-1]  # a reasoning model's verdict follows its thinking
    ordered = sorted(words, key=lambda w: -len(tokens(w)))
    lines = [tokens(line) for line in text.splitlines() if tokens(line)]
    heads = [lines[0]] if lines else []
    toks = tokens(text)
    if "answer" in toks:
        after = toks[len(toks) - toks[::-1].index("answer"):]
        heads.append(after[1:] if after[:1] == ["is"] else after)
    for head in heads:
        for w in ordered:
            if head[:len(tokens(w))] == tokens(w):
                return w
    return None


def verify(response: str, record: dict) -> bool:
    """Is the reply's label word the record's gold label word?"""
    return predicted(response, record["metadata"]["label_words"]) == record["answer"]


def build(train_rows: tables.Rows, eval_rows: tables.Rows | None, template: str = DEFAULT_TEMPLATE,
          label_words: list[str] = DEFAULT_LABEL_WORDS, answer_column: str = DEFAULT_LABEL_COLUMN,
          n_shots: int = 4, demos_fixed: bool = False, seed: int = 0, train_size: int = 0,
          eval_size: int = 0) -> tuple[list[dict], list[dict]]:
    """Training records (query + its demonstrations as context) and evaluation records (with the
    demonstrations, ``context_kind=demos``, and without, ``none``; group ``distilled``)."""
    words = check_label_words(list(label_words))
    pool = examples(train_rows, template, answer_column, words)
    need = n_shots + (0 if demos_fixed else 1)  # per-record sampling leaves the query's own row out
    if n_shots < 1 or len(pool) < need:
        raise DatasetError(f"task.n_shots={n_shots} needs at least 1 shot and {need} training rows; "
                           f"there are {len(pool)}: lower task.n_shots or give more training rows")
    meta = dict(task="fewshot", label_words=words, n_shots=n_shots)
    fixed = sample(len(pool), n_shots, random.Random(f"{seed}/fixed")) if demos_fixed else None

    def context(split: str, i: int, exclude: int | None) -> str:
        # One RNG per (seed, split, row): a record's demonstrations do not depend on the other rows.
        return demos_context(pool, fixed or sample(len(pool), n_shots, random.Random(f"{seed}/{split}/{i}"), exclude))

    queries = [i for i in range(len(pool)) if not fixed or i not in fixed]
    if not queries:
        raise DatasetError(f"all {len(pool)} training rows are demonstrations (task.demos_fixed=true, "
                           f"task.n_shots={n_shots}); give more training rows")
    train = [tables.record(pool[i][1], context("train", i, i), pool[i][2], pool[i][0], **meta,
                           group="distilled", context_kind="demos") for i in tables.first(queries, train_size)]
    evals = []
    for i, (where, query, label) in enumerate(tables.first(examples(eval_rows, template, answer_column, words),
                                                           eval_size) if eval_rows else []):
        evals.append(tables.record(query, context("eval", i, None), label, where, **meta))
    return train, tables.with_and_without(evals, "demos")


def load(cfg):
    """``load_task`` for ``task.name=fewshot`` (rows from task.train_file/eval_file or task.dataset)."""
    # A template given on the command line cannot hold a real newline: read a typed "\n" as one.
    template = (cfg.template or DEFAULT_TEMPLATE).replace("\\n", "\n")
    train, evals = build(tables.split_rows(cfg, "train"), tables.split_rows(cfg, "eval"), template=template,
                         label_words=list(cfg.label_words) or DEFAULT_LABEL_WORDS,
                         answer_column=cfg.answer_column or DEFAULT_LABEL_COLUMN, n_shots=cfg.n_shots,
                         demos_fixed=cfg.demos_fixed, seed=cfg.seed, train_size=cfg.train_size,
                         eval_size=cfg.eval_n_per_rule)
    return TaskData(train, evals, verify)
