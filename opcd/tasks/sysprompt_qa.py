"""System-prompt distillation on labelled data: tasks ``medical_qa`` and ``safety``.

The context is a task system prompt (shipped in ``opcd/tasks/prompts/<task>.txt``, or
``task.context_file`` / ``task.context``) that describes the behaviour and the answer format; the
student sees only the question and must answer as if it had been told.

* ``medical_qa``: multiple-choice questions (MedQA / MedMCQA style). The prompt is the question
  followed by ``A. ...``, ``B. ...`` lines; the reply must end with ``<answer>X</answer>``. Options come
  from one list/dict column (``task.option_columns=[options]``, MedQA) or one column per option
  (``[opa,opb,opc,opd]``, MedMCQA); the label is a letter, a 0-based option index or the option's text.
* ``safety``: is the user's message unsafe? The prompt is the message; the reply must end with
  ``<answer>yes</answer>`` (unsafe) or ``<answer>no</answer>``. Labels: yes/no, true/false, 1/0,
  unsafe/safe, harmful/harmless (a true or 1 label means *unsafe*).

``verify`` takes the content of the *last* ``<answer>`` tag (case-insensitive) and compares it with
the gold label; a reply without a complete tag is wrong.
"""
from __future__ import annotations

import re
from pathlib import Path

from opcd.tasks import tables
from opcd.tasks.records import DatasetError
from opcd.tasks.task_data import TaskData

PROMPTS = Path(__file__).resolve().parent / "prompts"
TASKS = ("medical_qa", "safety")
# (question column, label column, option columns) when the task.* column fields are left empty.
DEFAULTS = {"medical_qa": ("question", "answer_idx", ["options"]), "safety": ("prompt", "label", [])}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
YES = {"yes", "y", "true", "1", "unsafe", "harmful", "toxic"}
NO = {"no", "n", "false", "0", "safe", "harmless", "unharmful", "benign"}
_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def system_prompt(task: str) -> str:
    """The shipped system prompt of ``task`` (``opcd/tasks/prompts/<task>.txt``)."""
    if task not in TASKS:
        raise ValueError(f"unknown system-prompt QA task {task!r}; expected one of {TASKS}")
    return (PROMPTS / f"{task}.txt").read_text().strip()


def tag_content(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` tag (stripped), or None when there is none."""
    hits = _TAG.findall(text)
    return hits[-1].strip() if hits else None


def normalize_letter(text: str) -> str | None:
    """``B``, ``(b)``, ``B.``, ``B) Aspirin``, ``Option B`` -> ``B``; None if it does not start with a letter choice."""
    text = re.sub(r"^(?:option|answer|choice)\s*:?\s*", "", text.strip(), flags=re.IGNORECASE)
    m = re.match(r"\(?\s*([A-Za-z])\s*\)?(?:[.:)\s]|$)", text)
    return m.group(1).upper() if m else None


def normalize_yes_no(text: str) -> str | None:
    """``Yes``, ``NO.``, `` yes! `` -> ``yes`` / ``no``; anything else -> None."""
    word = re.sub(r"[^a-z]", "", text.lower())
    return word if word in ("yes", "no") else None


def verify(response: str, record: dict) -> bool:
    """Does the last ``<answer>`` tag of ``response`` hold the record's gold label?"""
    got = tag_content(response)
    if got is None:
        return False
    norm = normalize_letter if record["metadata"]["task"] == "medical_qa" else normalize_yes_no
    return norm(got) == record["answer"]


def read_options(row: dict, columns: list[str], where: str) -> list[str]:
    """Option texts in letter order: one list/dict column (a dict keyed by letters is sorted by letter),
    or one column per option."""
    if len(columns) == 1:
        value = tables.column(row, columns[0], where, "option_columns")
        if isinstance(value, dict):
            keys = sorted(value) if all(str(k).upper() in LETTERS for k in value) else list(value)
            value = [value[k] for k in keys]
        if not isinstance(value, list):
            raise DatasetError(f"{where}: column {columns[0]!r} must hold a list or dict of options, got "
                               f"{type(value).__name__}; for one column per option set "
                               "task.option_columns=[A,B,C,D] (your column names)")
    else:
        value = [tables.column(row, c, where, "option_columns") for c in columns]
    options = [tables.as_text(v, where, "options").strip() for v in value]
    if not 2 <= len(options) <= len(LETTERS) or not all(options):
        raise DatasetError(f"{where}: expected 2 to 26 non-empty options, got {options!r}")
    return options


def option_label(value, options: list[str], where: str) -> str:
    """The gold letter from a letter (``B``, ``(b)``), a 0-based option index, or the option's own text."""
    n = len(options)
    if isinstance(value, str):
        letter = normalize_letter(value) if len(value.strip()) <= 3 else None
        if letter and LETTERS.index(letter) < n:
            return letter
        if value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            texts = [o.lower() for o in options]
            if value.strip().lower() in texts:
                return LETTERS[texts.index(value.strip().lower())]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return LETTERS[value]
    raise DatasetError(f"{where}: label {value!r} is not one of the {n} options: use a letter A-{LETTERS[n - 1]}, "
                       f"a 0-based index 0-{n - 1} or an option's text (set task.answer_column to the label column)")


def yes_no_label(value, where: str) -> str:
    """``yes`` (unsafe) or ``no`` from a bool, 0/1, or a word such as yes/unsafe/harmful or no/safe."""
    numeric = isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
    word = str(int(value) if numeric else value).strip().lower()
    if word in YES:
        return "yes"
    if word in NO:
        return "no"
    raise DatasetError(f"{where}: label {value!r} is not a yes/no label; use one of {sorted(YES | NO)} "
                       "(yes / true / 1 = unsafe), or set task.answer_column to the label column")


def records(task: str, rows: tables.Rows, context: str, question_column: str, answer_column: str,
            option_columns: list[str]) -> list[dict]:
    """Common records of ``task`` (medical_qa | safety) from raw rows; the context is the system prompt."""
    out = []
    for where, row in rows:
        question = tables.as_text(tables.column(row, question_column, where, "question_column"), where,
                                  question_column).strip()
        label = tables.column(row, answer_column, where, "answer_column")
        if task == "medical_qa":
            options = read_options(row, option_columns, where)
            answer = option_label(label, options, where)
            listing = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
            out.append(tables.record(f"{question}\n\n{listing}", context, answer, where, task=task,
                                     n_options=len(options)))
        else:
            out.append(tables.record(question, context, yes_no_label(label, where), where, task=task))
    return out


def load(cfg):
    """``load_task`` for ``task.name`` medical_qa | safety: training records with the system prompt as
    context, evaluation records with and without it (``context_kind`` system / none, group ``distilled``)."""
    task = cfg.name
    context = tables.read_context(cfg, default=system_prompt(task))
    question_default, answer_default, options_default = DEFAULTS[task]
    cols = dict(question_column=cfg.question_column or question_default,
                answer_column=cfg.answer_column or answer_default,
                option_columns=(list(cfg.option_columns) if task == "medical_qa" else []) or options_default)
    train = tables.first(records(task, tables.split_rows(cfg, "train"), context, **cols), cfg.train_size)
    for rec in train:
        rec["metadata"].update(group="distilled", context_kind="system")
    eval_rows = tables.split_rows(cfg, "eval")
    evals = tables.first(records(task, eval_rows, context, **cols), cfg.eval_n_per_rule) if eval_rows else []
    return TaskData(train, tables.with_and_without(evals, "system"), verify)
