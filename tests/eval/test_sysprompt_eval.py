"""Statistics of the system-prompt evaluator (opcd.eval.sysprompt): Wilson intervals, Newcombe
differences, scoring with/without a prompt, Harm; and (slow) one engine shared across models."""
import json

import pytest

from opcd.eval.sysprompt import NONE, difference, fmt_rate, harm, proportion, score, wilson_interval


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


def test_proportion():
    p = proportion([True, False, True, True])
    assert (p["k"], p["n"], p["rate"]) == (3, 4, 0.75) and p["lo"] < 0.75 < p["hi"]
    assert proportion([])["rate"] is None
    assert fmt_rate(proportion([True] * 3 + [False])) .startswith("75.0% [") and fmt_rate(None) == "–"


def test_difference_newcombe_reference():
    # Newcombe (1998), method 10, example (a): 56/70 vs 48/80 -> 0.2000 (0.0524, 0.3339).
    d = difference(proportion([1] * 56 + [0] * 14), proportion([1] * 48 + [0] * 32))
    assert d["diff"] == pytest.approx(0.2) and (d["lo"], d["hi"]) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    same = difference(proportion([1, 0]), proportion([1, 0]))
    assert same["diff"] == 0 and same["lo"] < 0 < same["hi"]
    assert difference({"rate": None}, proportion([1]))["diff"] is None


def test_score_uses_own_condition_for_with_and_none_for_without():
    texts = {NONE: ["bonjour", "hello", "meow"], "fr": ["bonjour", "bonjour"], "cat": ["meow", "x", "x", "x"]}
    verifiers = {"fr": lambda t: t == "bonjour", "cat": lambda t: "meow" in t, "es": lambda t: t == "hola"}
    r = score(texts, verifiers)
    assert r["fr"]["with"]["rate"] == 1.0 and r["fr"]["without"]["k"] == 1 and r["fr"]["without"]["n"] == 3
    assert r["cat"]["with"]["rate"] == 0.25 and r["cat"]["without"]["rate"] == pytest.approx(1 / 3)
    assert r["es"]["with"] is None and r["es"]["without"]["rate"] == 0.0  # no condition sampled with it
    only_none = score({NONE: ["bonjour"]}, verifiers)
    assert only_none["fr"]["with"] is None and only_none["fr"]["without"]["rate"] == 1.0


def test_harm_is_the_drop_per_prompt_and_condition():
    before = {"cat": {"with": proportion([1] * 30 + [0] * 90), "without": proportion([0] * 120)},
              "fr": {"with": proportion([1] * 60 + [0] * 60), "without": proportion([0] * 120)}}
    after = {"cat": {"with": proportion([1] * 12 + [0] * 108), "without": None},
             "fr": {"with": proportion([1] * 66 + [0] * 54), "without": proportion([1] * 50 + [0] * 70)}}
    h = harm(before, after)
    assert h["cat"]["with"]["diff"] == pytest.approx(0.15) and h["cat"]["with"]["lo"] > 0  # a significant drop
    assert "without" not in h["cat"]  # not evaluated after training
    assert h["fr"]["with"]["diff"] == pytest.approx(-0.05)  # improved: negative harm
    assert h["fr"]["without"]["diff"] == pytest.approx(-50 / 120)


@pytest.mark.slow
def test_models_share_one_engine_and_results_do_not_depend_on_order(tiny_model_dir):
    """Reloading weights in place and re-seeding before each condition: the same model evaluated
    first and after another model gives identical replies."""
    pytest.importorskip("langdetect")
    from opcd.config import ASSETS
    from opcd.eval.sysprompt import EvalSettings, evaluate_models

    toy = str(ASSETS / "toy-model")
    s = EvalSettings(prompts=6, samples=2, max_tokens=12, max_model_len=256, temperature=1.0, top_p=1.0)
    models = [{"label": "a", "path": toy, "conditions": [NONE, "cat"]},
              {"label": "b", "path": toy, "conditions": [NONE, "cat"]}]
    res = evaluate_models(models, s)
    assert res["a"]["conditions"][NONE]["n"] == 12
    assert json.dumps(res["a"]["rates"]) == json.dumps(res["b"]["rates"])
    assert res["a"]["conditions"]["cat"]["examples"] == res["b"]["conditions"]["cat"]["examples"]
    assert res["a"]["conditions"]["cat"]["tokens"] == res["b"]["conditions"]["cat"]["tokens"]
