"""Intervals over prompts and paired tests (opcd.eval.stats) against values computed by hand."""
import math

import pytest

from opcd.eval.stats import (bootstrap_interval, mcnemar, mcnemar_exact, paired_bootstrap, prompt_interval,
                             prompt_rates, wilson_interval)


def test_wilson_interval_reference_values():
    # Newcombe (1998), Table I: 81/263 -> (0.2553, 0.3662); and the textbook 0/10, 5/10 cases.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_contains_the_rate_and_shrinks_with_n():
    for k, n in [(1, 3), (7, 20), (60, 120), (119, 120)]:
        lo, hi = wilson_interval(k, n)
        assert 0 <= lo <= k / n <= hi <= 1
    assert wilson_interval(600, 1200)[1] - wilson_interval(600, 1200)[0] < wilson_interval(60, 120)[1] - wilson_interval(60, 120)[0]


@pytest.mark.parametrize("b,c,p", [
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 2 * P[Bin(10, 1/2) <= 2] = 0.109375
    (0, 5, 2 / 32),  # 2 * P[Bin(5, 1/2) = 0]
    (6, 1, 2 * (1 + 7) / 128),  # symmetric in b, c
    (3, 3, 1.0), (0, 0, 1.0), (0, 1, 1.0),
    (0, 10, 2 / 1024),
])
def test_mcnemar_exact_binomial_p(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_counts_discordant_prompts():
    a = [1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    b = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # a only: 7 (prompts 1, 2, 5-9); b only: 1 (prompt 4)
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"], r["prompts"]) == (7, 1, 12)
    assert r["p"] == pytest.approx(2 * 9 / 256) and r["diff"] == pytest.approx(6 / 12)
    with pytest.raises(ValueError):
        mcnemar([1], [1, 0])
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_prompt_interval_is_wilson_over_prompts_with_one_sample():
    r = prompt_interval([[True]] * 81 + [[False]] * 182)
    assert (r["method"], r["prompts"], r["samples"]) == ("wilson", 263, 263)
    assert (r["lo"], r["hi"]) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert prompt_interval([])["rate"] is None
    assert prompt_rates([[True, False], [True, True], [False]]) == [0.5, 1.0, 0.0]
    with pytest.raises(ValueError):
        prompt_rates([[True], []])


def test_bootstrap_interval_matches_the_normal_approximation_and_is_deterministic():
    rates = [1.0, 0.0] * 200  # 400 prompts, rate 0.5: normal half-width 1.96 * 0.5 / 20 = 0.049
    lo, hi = bootstrap_interval(rates, seed=3)
    assert lo == pytest.approx(0.5 - 0.049, abs=0.006) and hi == pytest.approx(0.5 + 0.049, abs=0.006)
    assert bootstrap_interval(rates, seed=3) == (lo, hi)
    assert bootstrap_interval([0.25] * 7) == (0.25, 0.25)  # no spread between prompts
    assert bootstrap_interval([]) == (0.0, 1.0)


def test_samples_of_one_prompt_do_not_count_as_independent():
    # 60 prompts, 2 samples each, both samples always agree: effectively 60 observations, not 120.
    over_prompts = prompt_interval([[True, True]] * 30 + [[False, False]] * 30)
    assert over_prompts["method"] == "bootstrap" and over_prompts["rate"] == 0.5
    half = (over_prompts["hi"] - over_prompts["lo"]) / 2
    assert half == pytest.approx(1.96 * 0.5 / math.sqrt(60), abs=0.015)
    lo, hi = wilson_interval(60, 120)
    assert half > (hi - lo) / 2 + 0.02


def test_paired_bootstrap_known_cases():
    # a beats b on 3 of 10 prompts and ties elsewhere: the resampled mean difference is <= 0 exactly
    # when none of the 3 is drawn, probability 0.7^10; the two-sided p doubles it.
    a, b = [1.0] * 3 + [1.0] * 7, [0.0] * 3 + [1.0] * 7
    r = paired_bootstrap(a, b, n_boot=20_000)
    assert r["diff"] == pytest.approx(0.3) and r["prompts"] == 10
    assert r["p"] == pytest.approx(2 * 0.7 ** 10, abs=0.01)
    assert r["lo"] == pytest.approx(0.0, abs=1e-9) and r["hi"] == pytest.approx(0.6, abs=0.1001)
    same = paired_bootstrap([0.5, 1.0, 0.0], [0.5, 1.0, 0.0])
    assert (same["diff"], same["lo"], same["hi"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
    all_a = paired_bootstrap([1.0] * 5, [0.0] * 5)
    assert (all_a["diff"], all_a["lo"], all_a["hi"], all_a["p"]) == (1.0, 1.0, 1.0, 0.0)
    assert paired_bootstrap([], [])["diff"] is None
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_paired_is_tighter_than_independent_when_prompts_vary():
    # Prompt difficulty varies a lot, and run a is 0.1 better on every prompt: pairing removes the
    # between-prompt spread.
    base = [i / 20 for i in range(20)] * 3
    a = [min(1.0, x + 0.1) for x in base]
    r = paired_bootstrap(a, base, level=0.90)
    assert r["lo"] > 0.05  # the one-sided 95% bound clears 0
    ia, ib = bootstrap_interval(a, 0.90), bootstrap_interval(base, 0.90)
    assert ia[0] < ib[1]  # unpaired intervals overlap
