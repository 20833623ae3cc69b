"""The shared evaluator (opcd.eval.evaluator) with a fake generate function: rendering with and without
the context, sample-to-record pairing, and the loop's metric keys and values on a hand-made set."""
import pytest

from opcd.chat import encode_prompt
from opcd.engine import Sample
from opcd.eval.evaluator import (EvalSettings, agreement_records, evaluate_records, evaluate_results, generate_answers,
                                 render, verify_answers)
from opcd.eval.metrics import per_prompt

CTX = "Reverse the word."


def _rec(prompt, answer, kind, group="distilled"):
    return {"prompt": prompt, "context": "" if kind == "none" else CTX, "answer": answer,
            "metadata": {"group": group, "rule": "reverse", "context_kind": kind}}


# The fake model's behaviour, keyed by (user prompt, whether the system turn is present):
#   abc: right / right   xyz: right without, wrong with (harm)   pqr: wrong without, right with
#   mno (group other, only with the context): right
RIGHT = {("abc", False): True, ("abc", True): True, ("xyz", False): True, ("xyz", True): False,
         ("pqr", False): False, ("pqr", True): True, ("mno", True): True}
ANSWER = {"abc": "cba", "xyz": "zyx", "pqr": "rqp", "mno": "onm"}
RECORDS = [_rec("abc", "cba", "none"), _rec("abc", "cba", "system"), _rec("xyz", "zyx", "none"),
           _rec("xyz", "zyx", "system"), _rec("pqr", "rqp", "none"), _rec("pqr", "rqp", "system"),
           _rec("mno", "onm", "system", group="other")]


def verify(text, record):
    return text == record["answer"]


def fake_model(tok, calls=None):
    """A Generate that reads only the prompt ids (never the records): it answers the user prompt it finds
    there, right or wrong per RIGHT; answers are 4 tokens long with a system turn and 2 without."""
    def generate(records, prompt_ids, sampling):
        if calls is not None:
            calls.append((records, prompt_ids, sampling))
        out = []
        for ids in prompt_ids:
            text = tok.decode(ids)
            user = text.split("<|user|>")[1].split("<|end|>")[0]
            with_ctx = "<|system|>" in text
            for _ in range(sampling["n"]):
                reply = ANSWER[user] if RIGHT[(user, with_ctx)] else "?"
                out.append(Sample(prompt_ids=list(ids), response_ids=[7] * (4 if with_ctx else 2), text=reply))
        return out
    return generate


def test_metric_keys_and_values_by_hand(tok):
    m = evaluate_records(fake_model(tok), tok, RECORDS, verify, EvalSettings())
    assert set(m) == {"eval/distilled/none", "eval/distilled/system", "eval/other/system",
                      "eval/distilled/harm_system", "eval/distilled/both_correct_system",
                      "eval/distilled/delta_len_system"}
    assert m["eval/distilled/none"] == pytest.approx(2 / 3)  # abc, xyz
    assert m["eval/distilled/system"] == pytest.approx(2 / 3)  # abc, pqr
    assert m["eval/other/system"] == 1.0
    assert m["eval/distilled/harm_system"] == pytest.approx(1 / 2)  # xyz of {abc, xyz}
    assert m["eval/distilled/both_correct_system"] == pytest.approx(1 / 3)  # abc
    assert m["eval/distilled/delta_len_system"] == pytest.approx(4 / 2 - 1)
    assert evaluate_records(fake_model(tok), tok, [], verify, EvalSettings()) == {}


def test_context_is_rendered_only_for_records_that_carry_one(tok):
    calls = []
    evaluate_records(fake_model(tok, calls), tok, RECORDS, verify, EvalSettings())
    (records, prompt_ids, sampling), = calls
    assert records == RECORDS
    assert prompt_ids == [encode_prompt(tok, r["prompt"], r["context"]) for r in RECORDS] == render(tok, RECORDS)
    ctx_ids = tok.encode(CTX, add_special_tokens=False)
    for r, ids in zip(RECORDS, prompt_ids):
        has = any(ids[i:i + len(ctx_ids)] == ctx_ids for i in range(len(ids)))
        assert has == bool(r["context"]), r
        assert (CTX in tok.decode(ids)) == (r["metadata"]["context_kind"] != "none")
    # The loop's greedy evaluation by default: temperature 0, one answer per prompt.
    assert sampling == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32, "n": 1}


def test_answer_k_is_verified_against_record_k(tok):
    answers = generate_answers(fake_model(tok), tok, RECORDS, EvalSettings())
    results = verify_answers(RECORDS, answers, verify)
    assert [r.record for r in results] == RECORDS
    assert [r.correct for r in results] == [RIGHT[(r["prompt"], bool(r["context"]))] for r in RECORDS]
    # Shuffled answers (a rotation: every answer meets another prompt's record) verify as wrong.
    rotated = verify_answers(RECORDS, answers[1:] + answers[:1], verify)
    assert [r.correct for r in rotated] == [answers[(i + 1) % len(answers)].text == rec["answer"]
                                            for i, rec in enumerate(RECORDS)]
    assert sum(r.correct for r in rotated) < sum(r.correct for r in results)


def test_several_samples_per_prompt_are_prompt_major(tok):
    recs = RECORDS[:4]
    settings = EvalSettings(temperature=1.0, samples=3)
    results = evaluate_results(fake_model(tok), tok, recs, verify, settings)
    assert len(results) == 12
    assert [r.sample for r in results] == [0, 1, 2] * 4
    assert [r.record for r in results] == [r for r in recs for _ in range(3)]
    assert per_prompt(results) == [[True] * 3, [True] * 3, [True] * 3, [False] * 3]
    m = evaluate_records(fake_model(tok), tok, recs, verify, settings)
    assert m["eval/distilled/harm_system"] == pytest.approx(1 / 2)  # pairs sample j with sample j


def test_generate_returning_the_wrong_count_is_an_error(tok):
    def short(records, prompt_ids, sampling):
        return fake_model(tok)(records, prompt_ids, sampling)[:-1]

    with pytest.raises(RuntimeError, match="6 answers for 7 records"):
        evaluate_records(short, tok, RECORDS, verify, EvalSettings())
    with pytest.raises(ValueError):
        verify_answers(RECORDS, [], verify)


def test_settings_are_checked():
    for bad in ({"max_tokens": 0}, {"samples": 0}, {"temperature": -1.0}, {"top_p": 0.0}):
        with pytest.raises(ValueError):
            EvalSettings(**bad)
    assert EvalSettings(max_tokens=8, temperature=0.7, top_p=0.9, samples=2).sampling() == {
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "n": 2}


def test_agreement_records_are_the_distilled_ones_with_context():
    assert agreement_records(RECORDS) == [RECORDS[1], RECORDS[3], RECORDS[5]]
