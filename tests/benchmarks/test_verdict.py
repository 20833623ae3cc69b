"""The one rule for "met" (benchmarks/common/verdict.py): verdicts from intervals and runs, and the
intervals over prompts they are taken from."""
import math

import pytest

from benchmarks.common.verdict import (Rate, Verdict, difference, infer_n, mean_of, parse_target, rate_interval,
                                       rate_of, verdict, wilson)
from opcd.eval.stats import wilson_interval
from opcd.eval.sysprompt import difference as newcombe


# ---------------------------------------------------------------------------------------------
# verdict(kind, values, target)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interval,target,status", [
    ((0.61, 0.70), ">= 0.6", "met"), ((0.60, 0.70), ">= 0.6", "met"), ((0.55, 0.70), ">= 0.6", "within noise"),
    ((0.40, 0.59), ">= 0.6", "missed"), ((0.0, 0.2), "> 0", "within noise"), ((0.01, 0.2), "> 0", "met"),
    ((-0.3, -0.1), "> 0", "missed"), ((0.01, 0.04), "< 0.05", "met"), ((0.03, 0.07), "< 0.05", "within noise"),
    ((0.05, 0.09), "< 0.05", "missed"), ((0.2, 0.5), "<= 0.5", "met")])
def test_rates_are_judged_by_their_whole_interval(interval, target, status):
    assert verdict("rate", interval, target).status == status


def test_a_ratio_needs_three_runs_whatever_its_value():
    v = verdict("ratio", [5.0], ">= 2", "{:.2f}×".format)
    assert v.status == "too few runs" and v.label == "not met (1 run: 5.00×; target needs ≥ 3 runs)"
    assert verdict("ratio", [5.0, 6.0], ">= 2").status == "too few runs"
    assert verdict("ratio", [2.1, 2.5, 3.0], ">= 2").status == "met"
    assert verdict("ratio", [1.2, 1.3, 1.9], ">= 2").status == "missed"
    assert verdict("ratio", [1.9, 2.1, 2.2], ">= 2").status == "within noise"
    assert verdict("ratio", [0.02, 0.03, 0.04, 0.01], "< 0.05").label == "met"


def test_exact_measurements_and_nothing_measured():
    assert verdict("exact", [1.38, 1.38], "<= 1.5").status == "met"
    assert verdict("exact", [2.41, 2.88, 1.4], "<= 1.5").status == "missed"  # deterministic: one miss is a miss
    assert verdict("rate", None, ">= 0").label == "not measured" and verdict("ratio", [], ">= 2").status == "not measured"


def test_targets_and_kinds_are_checked():
    assert parse_target(">= 0.9") == (">=", 0.9) and parse_target("<0.05") == ("<", 0.05)
    with pytest.raises(ValueError, match="op"):
        parse_target("about 2")
    with pytest.raises(ValueError, match="kind"):
        verdict("vibes", [1.0], ">= 1")
    assert str(Verdict("met")) == "met"


# ---------------------------------------------------------------------------------------------
# Intervals over prompts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(0, 60), (7, 60), (30, 60), (60, 60), (67, 120)])
def test_wilson_agrees_with_the_evaluators(k, n):
    assert wilson(k / n, n) == pytest.approx(wilson_interval(k, n))


def test_pooled_counts_get_the_conservative_interval_over_prompts():
    p = {"rate": 0.625, "k": 75, "n": 120}  # 60 prompts x 2 samples, only pooled counts recorded
    pooled, over = rate_interval(p), rate_interval(p, prompts=60)
    assert over.lo < pooled.lo and over.hi > pooled.hi and "conservative" in over.how
    assert (over.lo, over.hi) == pytest.approx(wilson(0.625, 60))
    recorded = rate_interval({**p, "prompt_lo": 0.52, "prompt_hi": 0.72}, prompts=60)
    assert (recorded.lo, recorded.hi, recorded.how) == (0.52, 0.72, "bootstrap over prompts")


def test_difference_is_newcombes_interval_and_scales():
    a, b = {"rate": 0.625, "k": 75, "n": 120}, {"rate": 0.6167, "k": 74, "n": 120}
    d = difference(rate_interval(a), rate_interval(b))
    ref = newcombe(a, b)
    assert (d.rate, d.lo, d.hi) == pytest.approx((ref["diff"], ref["lo"], ref["hi"]), abs=1e-3)
    x, y = rate_of(0.9, 100), rate_of(0.9, 100)
    scaled = difference(x, y, 0.8)  # 0.9 - 0.8 * 0.9
    assert scaled.rate == pytest.approx(0.18) and scaled.lo < 0.18 < scaled.hi
    assert scaled.hi - scaled.lo < difference(x, y).hi - difference(x, y).lo  # less of b's uncertainty


def test_mean_of_narrows_like_an_average():
    r = Rate(0.5, 0.4, 0.6)
    m = mean_of([r, r])
    assert m.rate == 0.5 and m.hi - m.rate == pytest.approx(0.1 / math.sqrt(2))


def test_prompt_counts_inferred_from_rates_are_never_too_large():
    assert infer_n([63 / 64, 1.0, 0.0]) == 64
    assert infer_n([23 / 30, 1 / 3, 0.7]) == 30  # the true count is a multiple: 30, 60, ...
    assert infer_n([0.5]) == 2 and infer_n([None, 0.25]) == 4
    assert infer_n([math.pi / 4]) is None  # not a count
