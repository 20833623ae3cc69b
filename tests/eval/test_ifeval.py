"""The IFEval-style probe (opcd.eval.ifeval): its prompts, and IFEval's verifiers (if-verifiable) on
hand-made replies that follow and that break each instruction; run through the shared evaluator."""
from collections import Counter

import pytest

from opcd.engine import Sample
from opcd.eval import ifeval
from opcd.eval.evaluator import EvalSettings, evaluate_records, evaluate_results
from opcd.tasks.sysprompt_data import TRAIN_PROMPTS

pytest.importorskip("if_verifiable")
pytest.importorskip("langdetect")

ENGLISH = ("The moon is the bright natural satellite that circles our planet every month, and its light "
           "is reflected sunlight that changes shape as it moves.")
FRENCH = ("la lune est le satellite naturel de notre planète, elle tourne autour de la terre chaque mois "
          "et sa lumière vient du soleil.")
LONG = " ".join(["Gardening is a calm and rewarding hobby for many people."] * 10)  # 90 words


def _replies(iid: str, kw: dict) -> tuple[str, str]:
    """(a reply that follows the instruction, one that does not), written by hand per instruction type."""
    if iid == "length_constraints:number_words":
        return ("A quiet walk and a good book." if kw["relation"] == "less than" else LONG,
                LONG if kw["relation"] == "less than" else "Too short.")
    if iid == "keywords:existence":
        words = " and ".join(kw["keywords"])
        return f"Think about {words} every day.", "Nothing relevant here at all."
    if iid == "keywords:forbidden_words":
        return "A calm place full of fish and ships.", f"It is very {kw['forbidden_words'][0]} today."
    if iid == "startend:end_checker":
        return f"Do it once a month. {kw['end_phrase']}", f"{kw['end_phrase']} Do it once a month."
    return {
        "punctuation:no_comma": ("The river is calm and the birds sing.", "The river is calm, and the birds sing."),
        "change_case:english_lowercase": (ENGLISH.lower(), ENGLISH),
        "change_case:english_capital": ("GO TEAM GO! WE WILL WIN THE GAME TONIGHT AND EVERY NIGHT!", "Go team go!"),
        "detectable_content:postscript": ("Come to lunch on Friday.\n\nP.S. Bring your dog.", "Come to lunch on Friday."),
        "detectable_format:title": ("<<Morning Tea>>\nSteam rises from the cup.", "Morning Tea\nSteam rises from the cup."),
        "detectable_format:number_bullet_lists": ("* Fix leaks.\n* Take short showers.\n* Reuse water.",
                                                  "* Fix leaks.\n* Take short showers."),
        "startend:quotation": ('"Elephants can recognise themselves in a mirror."',
                               "Elephants can recognise themselves in a mirror."),
        "detectable_format:json_format": ('{"name": "Ada", "age": 36}', "name: Ada, age: 36"),
        "detectable_format:number_highlighted_sections": ("*Dig a hole* first, then *water it* well.",
                                                          "Dig a hole first, then water it well."),
        "language:response_language": (ENGLISH, FRENCH),
        "detectable_format:constrained_response": ("My answer is yes.", "Yes, it is a fruit."),
    }[iid]


def test_probe_size_and_coverage():
    recs = ifeval.records()
    assert len(recs) == len(ifeval.PROBES) >= 40
    types = Counter(r["metadata"]["instruction_id"] for r in recs)
    assert len(types) >= 12 and min(types.values()) >= 3
    assert len({r["prompt"] for r in recs}) == len(recs) and not {r["prompt"] for r in recs} & set(TRAIN_PROMPTS)
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(types) <= set(INSTRUCTION_DICT)  # every instruction is one IFEval's registry verifies
    assert all(r["context"] == "" and r["metadata"]["context_kind"] == "none" for r in recs)


@pytest.mark.parametrize("i", range(len(ifeval.PROBES)))
def test_verifier_accepts_a_following_reply_and_rejects_a_breaking_one(i):
    rec = ifeval.records()[i]
    good, bad = _replies(rec["metadata"]["instruction_id"], rec["metadata"]["kwargs"])
    assert ifeval.verify(good, rec), good
    assert not ifeval.verify(bad, rec), bad


def test_a_french_reply_breaks_english_instructions():
    """The cost the probe measures: a French-distilled model that ignores "in English" fails these."""
    for iid in ("change_case:english_lowercase", "language:response_language"):
        rec = next(r for r in ifeval.records() if r["metadata"]["instruction_id"] == iid)
        assert ifeval.verify(ENGLISH.lower(), rec) and not ifeval.verify(FRENCH, rec)


def test_empty_reply_follows_nothing_and_loose_accepts_a_preamble():
    rec = next(r for r in ifeval.records() if r["metadata"]["instruction_id"] == "startend:quotation")
    assert not ifeval.verify("", rec) and not ifeval.verify_loose("", rec)
    reply = 'Here is my answer:\n"Elephants never forget."'
    assert not ifeval.verify(reply, rec) and ifeval.verify_loose(reply, rec)


def _fake_generate(replies: dict[str, str]):
    def generate(records, prompt_ids, sampling):
        return [Sample(prompt_ids=list(ids), response_ids=[1, 2], text=replies[r["prompt"]])
                for r, ids in zip(records, prompt_ids) for _ in range(sampling["n"])]
    return generate


def test_runs_through_the_shared_evaluator():
    recs = ifeval.records()
    follow = {r["prompt"]: _replies(r["metadata"]["instruction_id"], r["metadata"]["kwargs"])[k % 2 == 1]
              for k, r in enumerate(recs)}  # every other probe is answered badly

    class Tok:  # the char tokenizer cannot encode every probe character; the evaluator only needs ids
        chat_template = "fake"

        def apply_chat_template(self, messages, **kw):
            return [3] * len(messages[-1]["content"])

    m = evaluate_records(_fake_generate(follow), Tok(), recs, ifeval.verify, EvalSettings())
    assert m == {"eval/ifeval/none": pytest.approx(24 / 48)}
    s = ifeval.summarize(evaluate_results(_fake_generate(follow), Tok(), recs, ifeval.verify, EvalSettings()))
    assert s["strict"]["rate"] == pytest.approx(0.5) and s["strict"]["prompts"] == 48
    assert s["strict"]["lo"] < 0.5 < s["strict"]["hi"] and s["strict"]["method"] == "wilson"
    assert s["strict_per_prompt"] == [float(k % 2 == 0) for k in range(48)]
    assert s["loose"]["rate"] >= s["strict"]["rate"]
    assert set(s["per_instruction"]) == {r["metadata"]["instruction_id"] for r in recs}
