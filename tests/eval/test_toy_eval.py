"""Toy-world accuracy tables (opcd.eval.toy) and the rollout fan-out split (opcd.rollout.worker.split_evenly)."""
import pytest

from opcd.chat import encode_prompt
from opcd.engine import Sample
from opcd.eval.evaluator import EvalSettings, verify_answers
from opcd.eval.toy import evaluate, format_table, table_of, verify_record
from opcd.rollout.worker import split_evenly
from opcd.tasks.toy_world import generate


def accuracy_table(records, responses):
    """The toy table of ready responses, through the shared evaluator's verification step."""
    return table_of(verify_answers(records, [Sample([], [], text=t) for t in responses], verify_record))


def _rec(rule, kind, answer):
    return {"prompt": "p", "context": "", "answer": answer, "metadata": {"rule": rule, "context_kind": kind}}


# (record, response); comments give the per-cell outcome.
ROWS = [
    (_rec("reverse", "system", "cba"), "cba"),  # hit
    (_rec("reverse", "system", "ol"), "lo"),  # miss          -> reverse/system 0.5
    (_rec("reverse", "none", "cba"), "abc"),  # miss
    (_rec("reverse", "none", "zz"), "z"),  # miss            -> reverse/none 0.0
    (_rec("sort", "system", "abc"), " abc\n"),  # hit (whitespace stripped) -> sort/system 1.0
    (_rec("sort", "demos", "abc"), "ABC"),  # miss           -> sort/demos 0.0
    (_rec("upper", "system", "AB"), "AB"),
    (_rec("upper", "system", "CD"), "CD"),
    (_rec("upper", "system", "EF"), "EF"),
    (_rec("upper", "system", "GH"), "gh"),  # 3/4           -> upper/system 0.75
]


def test_accuracy_table_hand_numbers():
    table = accuracy_table([r for r, _ in ROWS], [s for _, s in ROWS])
    assert table["reverse"] == {"system": 0.5, "none": 0.0}
    assert table["sort"] == {"system": 1.0, "demos": 0.0}
    assert table["upper"] == {"system": 0.75}
    # mean over the rules that have the column (macro average, not pooled over records)
    assert table["mean"] == pytest.approx({"system": (0.5 + 1.0 + 0.75) / 3, "demos": 0.0, "none": 0.0})
    assert list(table["mean"]) == ["system", "demos", "none"]  # CONTEXT_KINDS order
    assert list(table) == ["reverse", "sort", "upper", "mean"]


def test_accuracy_table_macro_not_micro():
    recs = [_rec("a", "none", "x")] * 9 + [_rec("b", "none", "x")]
    table = accuracy_table(recs, ["x"] * 9 + ["y"])  # a: 9/9, b: 0/1
    assert table["a"]["none"] == 1.0 and table["b"]["none"] == 0.0
    assert table["mean"]["none"] == pytest.approx(0.5)  # pooled would be 0.9


def test_accuracy_table_length_mismatch():  # one answer for ten records
    with pytest.raises(ValueError):
        accuracy_table([r for r, _ in ROWS], ["x"])


def test_format_table():
    table = accuracy_table([r for r, _ in ROWS], [s for _, s in ROWS])
    text = format_table(table, "my title")
    lines = text.splitlines()
    assert lines[0] == "my title"
    assert "rule" in lines[1] and "with system" in lines[1] and "with demos" in lines[1]
    assert "no context" in lines[1]
    assert set(lines[2]) == {"-"} and len(lines[2]) == len(lines[1])
    body = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert set(body) == {"reverse", "sort", "upper", "mean"}
    assert body["reverse"] == ["50.0%", "-", "0.0%"]
    assert body["sort"] == ["100.0%", "0.0%", "-"]
    assert body["upper"] == ["75.0%", "-", "-"]
    assert body["mean"] == ["75.0%", "0.0%", "0.0%"]
    assert all(len(line) == len(lines[1]) for line in lines[3:])  # fixed width
    assert format_table(table).splitlines()[0].startswith("rule")  # no title line


def test_evaluate_renders_prompts_with_context(tok):
    recs = generate("test", rules=["reverse", "upper"], n_per_rule=3, seed=0)
    seen = []

    def fake_generate(records, prompts, sampling):
        seen.extend(prompts)
        assert sampling == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 7, "n": 1}  # greedy
        # Perfect with context, wrong without.
        return [Sample(p, [], text=r["answer"] if r["context"] else "?") for r, p in zip(records, prompts)]

    table = evaluate(fake_generate, tok, recs, EvalSettings(max_tokens=7))
    assert seen == [encode_prompt(tok, r["prompt"], r["context"]) for r in recs]
    for rule in ("reverse", "upper"):
        assert table[rule] == {"system": 1.0, "demos": 1.0, "none": 0.0}
    assert table["mean"] == {"system": 1.0, "demos": 1.0, "none": 0.0}


@pytest.mark.parametrize("n,parts,sizes", [(10, 3, [4, 3, 3]), (9, 3, [3, 3, 3]), (2, 4, [1, 1, 0, 0]),
                                           (0, 2, [0, 0]), (7, 1, [7]), (64, 2, [32, 32])])
def test_split_evenly(n, parts, sizes):
    items = [f"x{i}" for i in range(n)]
    chunks = split_evenly(items, parts)
    assert [len(c) for c in chunks] == sizes
    assert [x for c in chunks for x in c] == items  # order preserved, contiguous
    assert max(sizes) - min(sizes) <= 1
