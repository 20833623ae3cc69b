"""Pure logic of the experience pipeline: traces -> items -> one bounded text -> the best candidate.

No engine here: the tests drive every function with plain data. Lengths are in *tokens of the
model's tokenizer* (passed in as a ``count_tokens(text) -> int`` callable), because the limit exists
to keep the teacher's context inside ``model.max_model_len``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from opcd.tasks.toy_world import format_demo_pairs

EXTRACTORS = ("demos", "llm")
TRUNCATIONS = ("newest", "best")
PLACEHOLDERS = ("{problem}", "{answer}", "{verdict}")
DEFAULT_PROMPT = Path(__file__).resolve().parent / "prompts" / "extract.txt"
LLM_HEADER = "Lessons from solving earlier problems:"  # first line of an llm experience text


@dataclass
class Trace:
    """One solved training problem."""

    problem: str  # the problem's prompt (without the context it was solved with)
    answer: str  # the model's answer text, stripped
    correct: bool  # the task's verifier on that answer


@dataclass
class Item:
    """One unit of experience; a text keeps whole items only (never half an item)."""

    text: str  # demos: "input -> output" line; llm: one lesson on one line
    correct: bool  # whether the trace it came from was correct ("best" truncation keeps those first)
    problem: str = ""  # demos: the input of the line
    answer: str = ""  # demos: the output of the line


def check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; expected {' | '.join(choices)}")


def load_template(path: Optional[str]) -> str:
    """The extraction prompt template (``None`` = the shipped default); it must contain
    ``{problem}`` and ``{answer}`` (``{verdict}`` is optional)."""
    p = Path(path) if path else DEFAULT_PROMPT
    if not p.is_file():
        raise FileNotFoundError(f"extraction prompt file {str(p)!r} does not exist")
    text = p.read_text()
    missing = [k for k in PLACEHOLDERS[:2] if k not in text]
    if missing:
        raise ValueError(f"extraction prompt {str(p)!r} lacks the placeholder(s) {', '.join(missing)}; "
                         f"a template uses {', '.join(PLACEHOLDERS)}")
    return text


def fill_template(template: str, trace: Trace) -> str:
    """Replace the three placeholders literally. Not ``str.format``: templates and problems may hold
    other braces (JSON, LaTeX ``\\frac{a}{b}``), which must pass through untouched, and a problem that
    itself contains ``{answer}`` must not be substituted again (hence one left-to-right pass)."""
    values = {"{problem}": trace.problem, "{answer}": trace.answer,
              "{verdict}": "correct" if trace.correct else "incorrect"}
    out, i = [], 0
    while i < len(template):
        key = next((k for k in PLACEHOLDERS if template.startswith(k, i)), None)
        out.append(values[key] if key else template[i])
        i += len(key) if key else 1
    return "".join(out)


def demo_items(traces: list[Trace]) -> list[Item]:
    """The toy world's experience: each *correct* trace becomes a demonstration line (a wrong one would
    demonstrate a wrong rule); repeated inputs are kept once."""
    items, seen = [], set()
    for t in traces:
        if t.correct and t.answer and t.problem not in seen:
            seen.add(t.problem)
            items.append(Item(f"{t.problem} -> {t.answer}", True, t.problem, t.answer))
    return items


def llm_items(traces: list[Trace], texts: list[str]) -> list[Item]:
    """Items the model wrote (one text per trace, same order); whitespace is collapsed so that each
    item is one line of the experience; empty and repeated ones are dropped (a repeat adds no knowledge)."""
    items, seen = [], set()
    for t, text in zip(traces, texts, strict=True):
        line = " ".join(text.split())
        if line and line not in seen:
            seen.add(line)
            items.append(Item(line, t.correct))
    return items


def render(items: list[Item], extractor: str) -> str:
    """The experience text of ``items``: demos in the toy world's demonstration format (the shipped
    model was pretrained on it), llm items as a bulleted list under a header. No items -> ``""``."""
    if not items:
        return ""
    if extractor == "demos":
        return format_demo_pairs([(it.problem, it.answer) for it in items])
    return LLM_HEADER + "\n" + "\n".join(f"- {it.text}" for it in items)


def truncate(items: list[Item], extractor: str, count_tokens: Callable[[str], int], max_tokens: int,
             policy: str = "newest") -> list[Item]:
    """The items whose rendered text fits in ``max_tokens`` tokens (0 = no limit), in their original order.

    Items are offered in priority order and each one is kept if the text still fits with it (a long
    item that does not fit is skipped, a shorter lower-priority one may still go in):
    ``newest`` prefers later items (the most recent traces); ``best`` prefers items from correct traces,
    then later ones. The text is re-rendered for every check because tokenizers may merge across items.
    """
    check_choice(policy, TRUNCATIONS, "truncation")
    if max_tokens <= 0:
        return list(items)
    order = sorted(range(len(items)), key=lambda i: (policy == "best" and not items[i].correct, -i))
    kept: list[int] = []
    for i in order:
        trial = sorted(kept + [i])
        if count_tokens(render([items[j] for j in trial], extractor)) <= max_tokens:
            kept = trial
    return [items[j] for j in kept]


def select_best(candidates: list[dict]) -> int:
    """Index of the chosen candidate: highest ``accuracy``; ties go to fewer ``tokens`` (a shorter
    context costs less in every teacher forward pass), then to the earlier candidate. Candidates with
    ``accuracy`` None (no experience extracted) are never chosen."""
    scored = [(i, c) for i, c in enumerate(candidates) if c.get("accuracy") is not None]
    if not scored:
        raise ValueError("no candidate has any experience text: no trace was correct (demos), no item was written "
                         "(llm), or no single item fits in max_experience_tokens; raise n_problems or "
                         "max_experience_tokens, lower rollout.temperature, or solve with use_context=true")
    return min(scored, key=lambda ic: (-ic[1]["accuracy"], ic[1]["tokens"], ic[0]))[0]
