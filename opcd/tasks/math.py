"""Math reasoning with experience as the context (task ``math``): GSM8K- and DAPO-Math-style data.

The teacher sees the experience text (``task.context_file`` or ``task.context``; may be empty, e.g.
to measure a plain baseline) in front of the question; the student sees the question only. Rows come
from a local ``.jsonl``/``.parquet`` file or a Hugging Face dataset, with configurable columns:

=================================  ====================  ======================================
data                               question_column       answer_column
=================================  ====================  ======================================
openai/gsm8k (config ``main``)     ``question``          ``answer`` (``... #### 42``)
open-r1/DAPO-Math-17k-Processed    ``prompt``            ``solution`` (the final answer)
BytedTsinghua-SIA/DAPO-Math-17k    ``prompt`` (chat)     ``reward_model.ground_truth``
=================================  ====================  ======================================

The reference answer is the final answer only: the text after the last ``####`` (GSM8K), else the
last ``\\boxed{...}``, else the whole cell. ``verify`` uses the maintained ``math-verify`` library
(``pip install -e '.[math]'``) and falls back to a numeric comparison of the extracted final answer
when it is not installed.
"""
from __future__ import annotations

import re
import threading
from fractions import Fraction
from functools import lru_cache

from opcd.tasks import tables
from opcd.tasks.records import DatasetError
from opcd.tasks.task_data import TaskData

DEFAULT_QUESTION, DEFAULT_ANSWER = "question", "answer"
MATH_VERIFY_HINT = "pip install math-verify (or pip install -e '.[math]')"
_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if there is none."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[starts[-1]:i - 1] if depth == 0 else None


def gold_answer(solution: str) -> str:
    """The final answer of a reference cell: after the last ``####``, else the last boxed, else the cell."""
    if "####" in solution:
        return solution.rsplit("####", 1)[1].strip()
    boxed = last_boxed(solution)
    return (boxed if boxed is not None else solution).strip()


def _final_part(text: str) -> str:
    # Reasoning models (Qwen3) think first: a boxed value inside <think> is a draft, not the answer.
    return text.rsplit("</think>", 1)[1] if "</think>" in text else text


def extract_answer(text: str) -> str | None:
    """The response's final answer, by priority: last ``\\boxed{}``, last ``#### x``, the last
    "answer is x" / "answer: x" phrase, else the last number in the text. None if nothing is found."""
    text = _final_part(text)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (r"####\s*([^\n]+)", r"answer\s*(?:is|:|=)\s*:?\s*([^\n]+)"):
        hits = re.findall(pattern, text, flags=re.IGNORECASE)
        if hits:
            return hits[-1].strip()
    numbers = re.findall(_NUMBER, text)
    return numbers[-1] if numbers else None


def to_number(text: str) -> Fraction | None:
    """``text`` as an exact number: ``1,234``, ``-3.5``, ``3/4``, ``\\frac{3}{4}``, ``\\dfrac34``, ``$5``,
    ``12%``, ``42 apples.`` (the first number of a short phrase). None if it holds no number."""
    s = re.sub(r"\\text\{[^}]*\}", " ", text)  # units: 5\text{ cm}
    s = re.sub(r"\\[,!;: ]|\\left|\\right|\\?\$|\\?%", "", s)  # LaTeX spacing, dollars, percent
    s = re.sub(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}", r"\1/\2", s)
    s = re.sub(r"\\[dt]?frac\s*(\d)\s*(\d)", r"\1/\2", s)  # \frac34 = 3/4
    m = re.search(_NUMBER, s)
    if not m:
        return None
    num, _, den = m.group(0).replace(",", "").partition("/")
    try:
        return Fraction(num) / (Fraction(den) if den else 1)
    except (ValueError, ZeroDivisionError):
        return None


def _norm_text(s: str) -> str:
    return re.sub(r"\\left|\\right|\\!|\\,|\s|\$|\.$", "", s).lower()


def numeric_match(response: str, gold: str) -> bool:
    """Fallback verifier: the extracted final answer equals ``gold`` as a number (exactly, or within a
    relative 1e-6 for decimals), or as normalised text when either side is not a number."""
    pred = extract_answer(response)
    if pred is None:
        return False
    p, g = to_number(pred), to_number(gold)
    if p is not None and g is not None:
        return p == g or abs(float(p - g)) <= 1e-6 * max(1.0, abs(float(g)))
    return _norm_text(pred) == _norm_text(gold)


@lru_cache(maxsize=1)  # a failed import is not cached by Python: try it once, not once per response
def _math_verify():
    try:
        import math_verify
    except ImportError:
        return None
    return math_verify


def _timeout() -> int | None:
    # math-verify times out with signal.alarm, which only the main thread may use (elsewhere it raises).
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=65536)
def _parsed_gold(gold: str):
    mv = _math_verify()
    # "$...$" makes the reference a LaTeX expression, so "1,234" is one number and "3/4" a fraction.
    return mv.parse(f"${gold.strip().strip('$')}$", parsing_timeout=_timeout())


def verify_answer(response: str, gold: str) -> bool:
    """Is ``response``'s final answer equal to ``gold``? math-verify when installed, else the numeric
    fallback (also used if math-verify fails on an input)."""
    mv = _math_verify()
    if mv is None:
        return numeric_match(response, gold)
    try:
        pred = mv.parse(_final_part(response), parsing_timeout=_timeout())
        return bool(mv.verify(_parsed_gold(gold), pred, timeout_seconds=_timeout()))
    except Exception:  # a parser crash or timeout on odd LaTeX must not stop training: fall back
        return numeric_match(response, gold)


def verify(response: str, record: dict) -> bool:
    """The task's verifier: ``response`` against the record's final answer."""
    return verify_answer(response, record["answer"])


def records(rows: tables.Rows, context: str, question_column: str = DEFAULT_QUESTION,
            answer_column: str = DEFAULT_ANSWER, instruction: str = "") -> list[dict]:
    """Common records from raw rows: prompt = question (+ instruction), context = the experience,
    answer = the final answer of the reference solution."""
    out = []
    for where, row in rows:
        question = tables.as_text(tables.column(row, question_column, where, "question_column"), where,
                                  question_column).strip()
        solution = tables.as_text(tables.column(row, answer_column, where, "answer_column"), where, answer_column)
        answer = gold_answer(solution)
        if not answer:
            raise DatasetError(f"{where}: column {answer_column!r} holds no final answer ({solution[:60]!r}); "
                               "expected '... #### 42', '\\boxed{42}' or '42'")
        prompt = f"{question}\n\n{instruction}" if instruction and question else question
        out.append(tables.record(prompt, context, answer, where, task="math"))
    return out


def load(cfg):
    """``load_task`` for ``task.name=math``: training records with the experience as context, and
    evaluation records with and without it (``context_kind`` experience / none, group ``distilled``)."""
    if _math_verify() is None:
        print(f"[opcd] math: math-verify is not installed, using the numeric fallback verifier ({MATH_VERIFY_HINT})")
    context = tables.read_context(cfg)
    cols = dict(question_column=cfg.question_column or DEFAULT_QUESTION,
                answer_column=cfg.answer_column or DEFAULT_ANSWER, instruction=cfg.instruction)
    train = tables.first(records(tables.split_rows(cfg, "train"), context, **cols), cfg.train_size)
    for rec in train:
        rec["metadata"].update(group="distilled", context_kind="experience")
    eval_rows = tables.split_rows(cfg, "eval")
    evals = tables.first(records(eval_rows, context, **cols), cfg.eval_n_per_rule) if eval_rows else []
    return TaskData(train, tables.with_and_without(evals, "experience"), verify)

