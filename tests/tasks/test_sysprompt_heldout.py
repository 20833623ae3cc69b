"""The system-prompt task's larger held-out set (opcd.tasks.sysprompt_heldout): size, disjointness from
every other prompt list, no near-duplicates, style coverage, and its selection by task.eval_set."""
import re
from collections import Counter

import pytest
from omegaconf import OmegaConf

from opcd.config import SyspromptTaskConfig
from opcd.tasks import sysprompt
from opcd.tasks.records import validate_record
from opcd.tasks.sysprompt_data import EVAL_PROMPTS, FACTS, TRAIN_PROMPTS
from opcd.tasks.sysprompt_heldout import HELDOUT_PROMPTS, HELDOUT_TEXTS, STYLES

STOP = set("a an the of to in on for and or i is are do does my me how what why can you your with it be that this "
           "at as by from".split())


def _norm(s: str) -> str:
    """Case, punctuation and spacing removed: "How do I...?" == "how do i ..."."""
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def _content(s: str) -> set[str]:
    return set(_norm(s).split()) - STOP


def _jaccard(a: str, b: str) -> float:
    x, y = _content(a), _content(b)
    return len(x & y) / max(1, len(x | y))


def test_at_least_240_distinct_prompts():
    assert len(HELDOUT_PROMPTS) >= 240 and HELDOUT_TEXTS == [p for _, p in HELDOUT_PROMPTS]
    assert len({_norm(p) for p in HELDOUT_TEXTS}) == len(HELDOUT_TEXTS)


def test_disjoint_from_training_first_eval_set_and_facts():
    others = {_norm(p) for p in TRAIN_PROMPTS + EVAL_PROMPTS + [q for q, _ in FACTS]}
    assert not {_norm(p) for p in HELDOUT_TEXTS} & others


def test_no_near_duplicates_within_the_set_or_with_the_training_prompts():
    """Near-duplicate: 75% or more of the content words shared (a reworded copy); templates with a
    different subject ("Write a short poem about X") share at most two thirds."""
    others = TRAIN_PROMPTS + EVAL_PROMPTS
    for i, p in enumerate(HELDOUT_TEXTS):
        for q in HELDOUT_TEXTS[:i] + others:
            assert _jaccard(p, q) < 0.75, (p, q)


def test_the_near_duplicate_check_catches_rewordings():
    assert _jaccard("Why is the sky blue?", "why is the SKY blue") == 1.0
    assert _jaccard("How can I keep cut flowers fresh longer?", "How can I keep my cut flowers fresh for longer?") >= 0.75


def test_every_style_is_covered_evenly_and_tagged():
    counts = Counter(style for style, _ in HELDOUT_PROMPTS)
    assert set(counts) == set(STYLES) and len(STYLES) >= 3
    assert min(counts.values()) >= 30  # each style alone can carry an interval of its own


def test_prompts_are_short_plain_english():
    for p in HELDOUT_TEXTS:
        assert p == p.strip() and 10 <= len(p) <= 120 and p.isascii(), p


def test_eval_set_selects_the_prompts_and_tags_the_style():
    assert sysprompt.eval_prompts() == EVAL_PROMPTS and sysprompt.eval_prompts("heldout240") == HELDOUT_TEXTS
    recs = sysprompt.eval_records("french", ["spanish"], eval_set="heldout240")
    assert len(recs) == 3 * len(HELDOUT_TEXTS)
    for i, r in enumerate(recs):
        validate_record(r, f"eval:{i}")
        assert r["metadata"]["style"] == dict((p, s) for s, p in HELDOUT_PROMPTS)[r["prompt"]]
    assert "style" not in sysprompt.eval_records("french", n=1)[0]["metadata"]  # v1 records unchanged
    with pytest.raises(ValueError, match="unknown task.eval_set 'v3'"):
        sysprompt.eval_prompts("v3")


def test_task_config_default_keeps_the_first_set():
    pytest.importorskip("langdetect")
    from opcd.tasks import load_task

    assert SyspromptTaskConfig().eval_set == "v1"
    data = load_task(OmegaConf.structured(SyspromptTaskConfig(eval_n_per_rule=0, eval_set="heldout240")))
    assert {r["prompt"] for r in data.eval if r["metadata"]["group"] == "distilled"} == set(HELDOUT_TEXTS)
    data = load_task(OmegaConf.structured(SyspromptTaskConfig(eval_n_per_rule=0)))
    assert {r["prompt"] for r in data.eval if r["metadata"]["group"] == "distilled"} == set(EVAL_PROMPTS)
