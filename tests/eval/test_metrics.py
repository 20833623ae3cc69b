"""Context-removability metrics on hand-built results with known answers."""
import math

import pytest
import torch

from opcd.eval.metrics import Result, accuracies, paired, per_prompt, topk_agreement_kl


def _r(prompt, kind, correct, length, group="distilled", rule="reverse"):
    return Result({"prompt": prompt, "context": "" if kind == "none" else "c",
                   "metadata": {"group": group, "rule": rule, "context_kind": kind}}, correct, length)


def _results():
    # 4 prompts asked without and with the system prompt:
    #   a: right/right  b: right/wrong  c: wrong/right  d: wrong/wrong
    rows = []
    for p, x, xc, lx, lxc in [("a", 1, 1, 4, 6), ("b", 1, 0, 4, 2), ("c", 0, 1, 2, 6), ("d", 0, 0, 2, 2)]:
        rows += [_r(p, "none", bool(x), lx), _r(p, "system", bool(xc), lxc)]
    rows.append(_r("a", "system", False, 9, group="other", rule="sort"))  # no partner: only in accuracies
    return rows


def test_accuracies_per_group_and_kind():
    acc = accuracies(_results())
    assert acc == {"eval/distilled/none": 0.5, "eval/distilled/system": 0.5, "eval/other/system": 0.0}


def test_harm_both_correct_and_length_change():
    m = paired(_results())
    assert m["eval/distilled/harm_system"] == pytest.approx(0.5)  # b of {a, b}
    assert m["eval/distilled/both_correct_system"] == pytest.approx(0.25)  # a
    assert m["eval/distilled/delta_len_system"] == pytest.approx(16 / 12 - 1)  # mean 4 vs 3 tokens
    assert not any(k.startswith("eval/other") for k in m)  # the lone record has no no-context partner


def test_harm_is_absent_without_right_no_context_answers():
    rows = [_r("a", "none", False, 1), _r("a", "system", True, 1)]
    m = paired(rows)
    assert "eval/distilled/harm_system" not in m and m["eval/distilled/both_correct_system"] == 0.0


def test_paired_pairs_sample_j_with_sample_j():
    # One prompt, 2 samples each way: without context right then wrong; with context wrong then right.
    rows = [_r("a", "none", True, 2), _r("a", "none", False, 2), _r("a", "system", False, 6), _r("a", "system", True, 2)]
    for i, r in enumerate(rows):
        r.sample = i % 2
    m = paired(rows)
    assert m["eval/distilled/harm_system"] == 1.0  # sample 0: right without, wrong with
    assert m["eval/distilled/both_correct_system"] == 0.0
    assert m["eval/distilled/delta_len_system"] == pytest.approx(4 / 2 - 1)


def test_per_prompt_groups_prompt_major_samples():
    rows = [_r("a", "none", c, 1) for c in (True, False, False, True, True, False)]
    for i, r in enumerate(rows):
        r.sample = i % 3
    assert per_prompt(rows) == [[True, False, False], [True, True, False]]
    assert per_prompt(_results()[:3]) == [[True], [True], [True]]  # one sample each
    assert per_prompt([]) == []


def test_agreement_kl_zero_for_equal_and_known_value():
    s = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    mask = torch.tensor([[True, False]])  # the second position is padding
    assert topk_agreement_kl(s, s, mask) == pytest.approx(0.0)
    t = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    expect = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert topk_agreement_kl(s, t, mask) == pytest.approx(expect)
    assert topk_agreement_kl(s, t, torch.zeros(1, 2, dtype=torch.bool)) == 0.0
