"""Statistics of the system-prompt evaluator (opcd.eval.sysprompt): proportions, Newcombe
differences, scoring with/without a prompt, Harm; and (slow) one engine shared across models."""
import json

import pytest

from opcd.engine import Sample
from opcd.eval.evaluator import EvalSettings
from opcd.eval.sysprompt import NONE, SyspromptSettings, condition_records, difference, fmt_rate, harm, proportion, score


def _answers(texts: dict[str, list[str]], samples: int = 1) -> dict:
    """``score``'s input from reply texts: per condition, one record per ``samples`` replies."""
    return {c: (condition_records([f"q{i}" for i in range(len(t) // samples)], c, {c: c}),
                [Sample([], [0] * len(x), text=x) for x in t]) for c, t in texts.items()}


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
    r = score(_answers(texts), verifiers)
    assert r["fr"]["with"]["rate"] == 1.0 and r["fr"]["without"]["k"] == 1 and r["fr"]["without"]["n"] == 3
    assert r["cat"]["with"]["rate"] == 0.25 and r["cat"]["without"]["rate"] == pytest.approx(1 / 3)
    assert r["es"]["with"] is None and r["es"]["without"]["rate"] == 0.0  # no condition sampled with it
    only_none = score(_answers({NONE: ["bonjour"]}), verifiers)
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


def test_score_gives_rates_over_prompts_with_several_samples():
    # 4 prompts x 2 samples without a prompt: per prompt 2/2, 1/2, 0/2, 0/2 right.
    texts = {NONE: ["bonjour", "bonjour", "bonjour", "hi", "hi", "hi", "hi", "hi"]}
    r = score(_answers(texts, samples=2), {"fr": lambda t: t == "bonjour"}, samples=2)["fr"]["without"]
    assert (r["k"], r["n"], r["prompts"]) == (3, 8, 4)
    assert r["per_prompt"] == [1.0, 0.5, 0.0, 0.0] and r["rate"] == pytest.approx(0.375)
    assert r["prompt_lo"] < 0.375 < r["prompt_hi"]
    # Over 4 prompts the interval is wider than Wilson's over 8 samples taken as independent.
    assert r["prompt_hi"] - r["prompt_lo"] > r["hi"] - r["lo"]


def test_harm_adds_a_paired_bootstrap_over_the_same_prompts():
    before = {"fr": {"with": score(_answers({"fr": ["y"] * 10}), {"fr": lambda t: t == "y"})["fr"]["with"]}}
    after = {"fr": {"with": score(_answers({"fr": ["y"] * 7 + ["n"] * 3}), {"fr": lambda t: t == "y"})["fr"]["with"]}}
    d = harm(before, after)["fr"]["with"]
    assert d["diff"] == pytest.approx(0.3) and d["paired"]["diff"] == pytest.approx(0.3)
    assert d["paired"]["p"] == pytest.approx(2 * 0.7 ** 10, abs=0.012)  # P(no dropped prompt drawn), two-sided
    assert "paired" not in harm({"fr": {"with": proportion([1])}}, {"fr": {"with": proportion([0])}})["fr"]["with"]


def test_settings_are_the_shared_type_with_this_evaluators_defaults():
    s = SyspromptSettings()
    assert isinstance(s, EvalSettings)
    assert (s.prompts, s.samples, s.temperature, s.top_p, s.max_tokens, s.seed) == (60, 2, 0.7, 0.9, 128, 0)
    assert s.sampling() == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 128, "n": 2}
    with pytest.raises(ValueError):
        SyspromptSettings(samples=0)


def test_condition_records_render_the_system_prompt_as_context():
    recs = condition_records(["a", "b"], "fr", {"fr": "Parle français."})
    assert [r["context"] for r in recs] == ["Parle français."] * 2 and recs[1]["prompt"] == "b"
    assert all(r["context"] == "" for r in condition_records(["a"], NONE, {"fr": "x"}))


@pytest.mark.slow
def test_models_share_one_engine_and_results_do_not_depend_on_order(tiny_model_dir):
    """Reloading weights in place and re-seeding before each condition: the same model evaluated
    first and after another model gives identical replies."""
    pytest.importorskip("langdetect")
    from opcd.config import ASSETS
    from opcd.eval.sysprompt import evaluate_models

    toy = str(ASSETS / "toy-model")
    s = SyspromptSettings(prompts=6, samples=2, max_tokens=12, max_model_len=256, temperature=1.0, top_p=1.0)
    models = [{"label": "a", "path": toy, "conditions": [NONE, "cat"]},
              {"label": "b", "path": toy, "conditions": [NONE, "cat"]}]
    res = evaluate_models(models, s)
    assert res["a"]["conditions"][NONE]["n"] == 12
    assert json.dumps(res["a"]["rates"]) == json.dumps(res["b"]["rates"])
    assert res["a"]["conditions"]["cat"]["examples"] == res["b"]["conditions"]["cat"]["examples"]
    assert res["a"]["conditions"]["cat"]["tokens"] == res["b"]["conditions"]["cat"]["tokens"]
