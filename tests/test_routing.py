"""opcd.routing: which prompt goes to whom, as pure functions."""
import random

import pytest

from opcd import routing


def _render(r, ctx):  # a stand-in renderer: the context's letters, then the prompt's
    return [ord(c) for c in ((r["context"] + "|") if ctx else "") + r["prompt"]]


RECS = [{"prompt": "ab", "context": "C1", "metadata": {}},
        {"prompt": "xyz", "context": "C22", "metadata": {"retain": True}},
        {"prompt": "q", "context": "", "metadata": {}}]


def test_prompt_views_hide_the_context_from_the_student_except_on_retain_records():
    v = routing.prompt_views(RECS, _render, 20)
    assert v.student[0] == _render(RECS[0], False) and v.context[0] == _render(RECS[0], True)
    assert v.student[1] == v.context[1] == _render(RECS[1], True)  # retain: the student keeps it
    assert v.room == [20 - max(len(a), len(b)) for a, b in zip(v.student, v.context)]


def test_rollout_prompts_follow_the_sampler():
    v = routing.prompt_views(RECS, _render, 20)
    assert routing.rollout_prompts(v, [2, 0], on_policy=True) == [v.student[2], v.student[0]]
    assert routing.rollout_prompts(v, [2, 0], on_policy=False) == [v.context[2], v.context[0]]


def test_sample_rows_are_prompt_major():
    assert routing.sample_rows([5, 2], 3) == [5, 5, 5, 2, 2, 2]
    assert routing.sample_rows([5, 2], 1) == [5, 2]


def test_teacher_sequences_and_learner_prompts_pair_each_response_with_its_record():
    v = routing.prompt_views(RECS, _render, 20)
    rows, resp = [0, 0, 2], [[1], [2, 2], [3]]
    assert routing.teacher_sequences(v, rows, resp) == [v.context[0] + [1], v.context[0] + [2, 2], v.context[2] + [3]]
    s, c = routing.learner_prompts(v, rows)
    assert s == [v.student[0], v.student[0], v.student[2]] and c == [v.context[0], v.context[0], v.context[2]]


def test_draw_prompts_covers_an_epoch_before_repeating():
    rng = random.Random(0)
    order, seen = [], []
    for _ in range(5):
        idx, order = routing.draw_prompts(order, rng, 7, 3)
        seen += idx
    assert sorted(seen[:7]) == list(range(7)) and sorted(seen[7:14]) == list(range(7))
    before = [4, 1]
    idx, after = routing.draw_prompts(before, random.Random(1), 7, 2)
    assert idx == [4, 1] and after == [] and before == [4, 1]  # the input is not modified


@pytest.mark.parametrize("step,every,evaluating,due", [(1, 1, False, True), (1, 2, False, False), (2, 2, False, True),
                                                       (3, 2, True, True)])
def test_push_due(step, every, evaluating, due):
    assert routing.push_due(step, every, evaluating) is due


def test_eval_and_save_cadence():
    assert [s for s in range(1, 11) if routing.eval_due(s, 10, 4)] == [4, 8, 10]
    assert [s for s in range(1, 11) if routing.eval_due(s, 10, 0)] == [10]
    assert [s for s in range(1, 7) if routing.save_due(s, 6, 0)] == [6]
    assert [s for s in range(1, 7) if routing.save_due(s, 6, 2)] == [2, 4, 6]
