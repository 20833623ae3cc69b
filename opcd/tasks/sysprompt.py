"""System-prompt distillation on a real instruct model (issue #9: head to head with TRL).

The privileged context is a *system prompt*; the student must behave as if it were there when it is
not. The distilled prompt is ``french`` ("Always reply in French, ..."); two other system prompts
with programmatic verifiers measure what distillation does to prompts that are still given (Harm):

==========  ===========================================================  ==============================
name        system prompt                                                verifier (reply -> bool)
==========  ===========================================================  ==============================
french      Always reply in French, whatever language the user writes in.  langdetect says ``fr``
spanish     Always reply in Spanish, whatever language the user writes in. langdetect says ``es``
cat         You are a cat. Start every reply with 'Meow!'                 the reply contains "meow"
==========  ===========================================================  ==============================

SmolLM2-135M-Instruct follows them with the prompt (``python -m opcd.eval.sysprompt``: 60 held-out
prompts x 2 samples at T=0.7, top-p 0.9, 128 tokens): French 55.8% [46.9, 64.4], Spanish 71.7%
[63.0, 79.0], cat 21.7% [15.2, 29.9]; without any system prompt 0% each. Candidates it did not
follow (40-60 replies each): "Begin every reply with the word 'Ahoy'" 2%, "End every reply with the
sentence 'Hope this helps!'" 0%, all capital letters 0%, "mention bananas" 3%, "include an emoji" 3%,
"answer with a numbered list" 12% (20% without it), German 45%.

User prompts are the fixed English lists of ``opcd.tasks.sysprompt_data`` (200 train, 60 eval,
disjoint), and a second, larger held-out set of 252 prompts in six tagged styles
(``opcd.tasks.sysprompt_heldout``; ``task.eval_set=heldout240``, ``EVAL_SETS``). Language detection uses ``langdetect`` with ``DetectorFactory.seed = 0`` (its results are
otherwise random); it is the ``bench`` extra, so this task fails at load time with the pip command
when it is missing.
"""
from __future__ import annotations

import re
from typing import Callable

from opcd.tasks.sysprompt_data import EVAL_PROMPTS, FACTS, TRAIN_PROMPTS
from opcd.tasks.sysprompt_heldout import HELDOUT_PROMPTS, HELDOUT_TEXTS
from opcd.tasks.task_data import TaskData

SYSTEM_PROMPTS = {
    "french": "Always reply in French, whatever language the user writes in.",
    "spanish": "Always reply in Spanish, whatever language the user writes in.",
    "cat": "You are a cat. Start every reply with 'Meow!'",
}
LANGDETECT_HINT = "pip install langdetect (or pip install -e '.[bench]')"
# Held-out user prompts by name (task.eval_set): v1 is what the committed benchmarks used.
EVAL_SETS = {"v1": EVAL_PROMPTS, "heldout240": HELDOUT_TEXTS}
STYLE_OF = dict((p, style) for style, p in HELDOUT_PROMPTS)  # heldout240 prompt -> its style


def eval_prompts(eval_set: str = "v1") -> list[str]:
    """The held-out user prompts of ``eval_set`` (an ``EVAL_SETS`` key)."""
    if eval_set not in EVAL_SETS:
        raise ValueError(f"unknown task.eval_set {eval_set!r}; expected one of {', '.join(EVAL_SETS)}")
    return EVAL_SETS[eval_set]


def _detector():
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise ImportError(f"the sysprompt task's language verifiers need langdetect; run: {LANGDETECT_HINT}") from None
    DetectorFactory.seed = 0  # langdetect is randomised; a fixed seed makes every verdict reproducible
    return detect, LangDetectException


def detect_language(text: str) -> str:
    """ISO code langdetect gives ``text`` (``""`` when there is nothing to detect, e.g. empty/digits)."""
    detect, err = _detector()
    if not any(c.isalpha() for c in text):
        return ""
    try:
        return detect(text)
    except err:
        return ""


def is_french(text: str) -> bool:
    return detect_language(text) == "fr"


def is_spanish(text: str) -> bool:
    return detect_language(text) == "es"


def says_meow(text: str) -> bool:
    return "meow" in text.lower()


VERIFIERS: dict[str, Callable[[str], bool]] = {"french": is_french, "spanish": is_spanish, "cat": says_meow}
FACT_ANSWERS = dict(FACTS)


def states_fact(response: str, question: str) -> bool:
    """Whether ``response`` contains an accepted answer to one of ``FACTS``' questions, in any of the
    listed languages (case-insensitive, as a whole word: "100" is not "1000", "sol" is not "solar"): a
    French reply to "capital of Japan?" that says Tokyo is right."""
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", response, re.IGNORECASE) for a in FACT_ANSWERS[question])


def check_names(distill: str, others: list[str]) -> None:
    for n in [distill, *others]:
        if n not in SYSTEM_PROMPTS:
            raise ValueError(f"unknown system prompt {n!r}; the sysprompt task knows {sorted(SYSTEM_PROMPTS)}")
    if distill in others:
        raise ValueError(f"task.other_prompts must not contain the distilled prompt {distill!r}")


def verify(response: str, record: dict) -> bool:
    """The record's system prompt's verifier (``metadata.sysprompt``), applied with or without the prompt;
    for the out-of-distribution facts (``sysprompt == "fact"``), whether the answer is stated."""
    name = record["metadata"]["sysprompt"]
    return states_fact(response, record["prompt"]) if name == "fact" else VERIFIERS[name](response)


def _record(prompt: str, name: str, kind: str, group: str, split: str) -> dict:
    meta = {"task": "sysprompt", "sysprompt": name, "context_kind": kind, "group": group, "split": split}
    if prompt in STYLE_OF:
        meta["style"] = STYLE_OF[prompt]
    return {"prompt": prompt, "context": SYSTEM_PROMPTS[name] if kind == "system" else "",
            "answer": FACT_ANSWERS[prompt][0] if name == "fact" else "", "metadata": meta}


def train_records(distill: str = "french", n: int | None = None, others: list[str] = (),
                  retain_ratio: float = 0.0) -> list[dict]:
    """Training records: the first ``n`` (default all 200) training prompts with the distilled system
    prompt as context; with ``retain_ratio > 0`` also retain records (another system prompt that the
    student sees too, ``metadata.retain``), spread round-robin over ``others``."""
    prompts = TRAIN_PROMPTS[:n] if n else TRAIN_PROMPTS
    out = [_record(p, distill, "system", "distilled", "train") for p in prompts]
    n_retain = round(retain_ratio * len(out))
    for i in range(n_retain if others else 0):
        rec = _record(prompts[i % len(prompts)], others[i % len(others)], "system", "other", "train")
        rec["metadata"]["retain"] = True
        out.append(rec)
    return out


def fact_records() -> list[dict]:
    """The out-of-distribution probe: every ``FACTS`` question without a system prompt (group ``ood``,
    so its accuracy is ``eval/ood/none``)."""
    return [_record(q, "fact", "none", "ood", "eval") for q, _ in FACTS]


def eval_records(distill: str = "french", others: list[str] = (), n: int | None = None,
                 others_without: bool = False, facts: bool = False, eval_set: str = "v1") -> list[dict]:
    """Evaluation records on the first ``n`` held-out prompts of ``eval_set``: the distilled prompt with
    and without its system prompt (group ``distilled``), the other prompts with theirs (group ``other``;
    also without it when ``others_without``), and with ``facts`` the factual OOD probe (``fact_records``).
    ``context_kind`` is ``system`` or ``none``; heldout240 records carry ``metadata.style``."""
    prompts = eval_prompts(eval_set)
    prompts = prompts[:n] if n else prompts
    out = [_record(p, distill, kind, "distilled", "eval") for kind in ("system", "none") for p in prompts]
    for name in others:
        for kind in ("system", "none") if others_without else ("system",):
            out += [_record(p, name, kind, "other", "eval") for p in prompts]
    return out + (fact_records() if facts else [])


def load(cfg):
    """``load_task`` for ``task=sysprompt`` (``opcd.config.SyspromptTaskConfig``): the distilled prompt's
    training records; periodic evaluation of it with and without its system prompt, the others with theirs."""
    others = list(cfg.other_prompts)
    check_names(cfg.distill_prompt, others)
    detect_language("hello world")  # fail now (with the pip command) if langdetect is missing
    train = train_records(cfg.distill_prompt, cfg.train_size, others, cfg.retain_ratio)
    evals = eval_records(cfg.distill_prompt, others, n=cfg.eval_n_per_rule, facts=True, eval_set=cfg.eval_set)
    return TaskData(train, evals, verify)
