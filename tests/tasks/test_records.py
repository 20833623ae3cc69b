"""Strict dataset loading (opcd.tasks.records) and task selection (opcd.tasks.load_task)."""
import json

import pytest
from omegaconf import OmegaConf

from opcd.config import JsonlTaskConfig, ToyRulesTaskConfig
from opcd.tasks import TaskData, load_task
from opcd.tasks.records import DatasetError, check_lengths, load_jsonl, validate_record
from opcd.tasks.toy_world import CONTEXT_KINDS, RULES, split_of


def _write(tmp_path, lines, name="data.jsonl"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return str(p)


def _j(**kw):
    return json.dumps(kw)


# ---------------------------------------------------------------------------------------------
# load_jsonl
# ---------------------------------------------------------------------------------------------
def test_good_file_returns_records_with_defaults(tmp_path):
    path = _write(tmp_path, [
        _j(prompt="abc", context="Reverse the string.", answer="cba", metadata={"rule": "reverse"}),
        "",  # blank lines are skipped
        _j(prompt="xyz", context=""),
        "   ",
        _j(prompt="q", context="c", metadata=None, extra="ignored"),
    ])
    recs = load_jsonl(path)
    assert recs == [  # metadata.row: where the record came from, for later errors
        {"prompt": "abc", "context": "Reverse the string.", "answer": "cba",
         "metadata": {"rule": "reverse", "row": f"{path}:1"}},
        {"prompt": "xyz", "context": "", "answer": "", "metadata": {"row": f"{path}:3"}},
        {"prompt": "q", "context": "c", "answer": "", "metadata": {"row": f"{path}:5"}},
    ]


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, [_j(prompt="a", context=""), "", '{"prompt": "b", "context": '])
    with pytest.raises(DatasetError) as e:
        load_jsonl(path)
    assert f"{path}:3" in str(e.value) and "malformed JSON" in str(e.value)


def test_non_object_line(tmp_path):
    path = _write(tmp_path, [_j(prompt="a", context=""), "[1, 2]"])
    with pytest.raises(DatasetError, match=r":2: expected a JSON object.*list"):
        load_jsonl(path)


@pytest.mark.parametrize("drop", ["prompt", "context"])
def test_missing_column_is_named(tmp_path, drop):
    rec = {"prompt": "abc", "context": "ctx"}
    del rec[drop]
    path = _write(tmp_path, [_j(prompt="ok", context=""), json.dumps(rec)])
    with pytest.raises(DatasetError) as e:
        load_jsonl(path)
    msg = str(e.value)
    assert f"{path}:2" in msg and "missing column" in msg and repr(drop) in msg.split(";")[0]


@pytest.mark.parametrize("col,val,typ", [("prompt", 3, "int"), ("context", None, "NoneType"),
                                         ("answer", ["a"], "list")])
def test_non_string_column(tmp_path, col, val, typ):
    rec = {"prompt": "abc", "context": "ctx", col: val}
    path = _write(tmp_path, [json.dumps(rec)])
    with pytest.raises(DatasetError) as e:
        load_jsonl(path)
    msg = str(e.value)
    assert f"{path}:1" in msg and f"column {col!r} must be a string" in msg and typ in msg


def test_empty_prompt(tmp_path):
    path = _write(tmp_path, [_j(prompt="  ", context="c")])
    with pytest.raises(DatasetError, match="empty 'prompt'"):
        load_jsonl(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "empty.jsonl"
    p.write_text(content)
    with pytest.raises(DatasetError, match="empty"):
        load_jsonl(str(p))


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="does not exist") as e:
        load_jsonl(path)
    assert path in str(e.value)


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    p = tmp_path / "latin1.jsonl"
    good = (_j(prompt="a" * 500, context="") + "\n").encode()  # a long first line: the old error counted from the read buffer
    p.write_bytes(good + b"\n" + b'{"prompt": "caf\xe9", "context": ""}\n')
    with pytest.raises(DatasetError) as e:
        load_jsonl(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: invalid UTF-8 (byte 0xe9 at byte 16 of the line)") and "save the file as UTF-8" in msg


def test_over_long_record_is_named_by_its_file_line(tmp_path):
    path = _write(tmp_path, [_j(prompt="short", context=""), "", _j(prompt="long", context="")])
    recs = load_jsonl(path)
    with pytest.raises(DatasetError) as e:
        check_lengths(recs, [5, 50], 20, "refuse", "training")
    assert f"first offending: {path}:3, 50 tokens" in str(e.value)


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)
    with pytest.raises(ValueError):
        validate_record("x", "f:1")


# ---------------------------------------------------------------------------------------------
# check_lengths
# ---------------------------------------------------------------------------------------------
RECS = [{"prompt": str(i)} for i in range(5)]
LENS = [10, 30, 20, 31, 5]


def test_check_lengths_all_fit():
    assert check_lengths(RECS, LENS, 31, "refuse", "train") == RECS
    assert check_lengths(RECS, LENS, 31, "whatever", "train") == RECS  # policy only matters on overflow


def test_check_lengths_refuse_counts():
    with pytest.raises(DatasetError) as e:
        check_lengths(RECS, LENS, 20, "refuse", "train")
    msg = str(e.value)
    assert "2 of 5 train records" in msg
    assert "20 tokens" in msg and "first offending: row 2," in msg and "30 tokens" in msg  # rows counted from 1
    assert "too_long=skip" in msg


def test_check_lengths_skip_drops(capsys):
    out = check_lengths(RECS, LENS, 20, "skip", "eval")
    assert out == [RECS[0], RECS[2], RECS[4]]
    assert "skipping 2 of 5 eval records" in capsys.readouterr().out


def test_check_lengths_unknown_policy():
    with pytest.raises(ValueError, match="unknown task.too_long policy 'truncate'"):
        check_lengths(RECS, LENS, 20, "truncate", "train")


# ---------------------------------------------------------------------------------------------
# load_task
# ---------------------------------------------------------------------------------------------
def _cfg(**kw):
    return OmegaConf.structured(ToyRulesTaskConfig(**kw))


def _jsonl(**kw):
    return OmegaConf.structured(JsonlTaskConfig(**kw))


def test_toy_rules_task():
    data = load_task(_cfg(train_size=20, eval_n_per_rule=3))
    assert isinstance(data, TaskData)
    assert len(data.train) == 20
    for r in data.train:
        assert r["metadata"]["rule"] == "reverse" and r["metadata"]["context_kind"] == "system"
        assert r["context"] and r["answer"] == r["prompt"][::-1] and split_of(r["prompt"]) == "train"
    groups = {}
    for r in data.eval:
        md = r["metadata"]
        assert split_of(r["prompt"]) == "test"
        assert md["group"] == ("distilled" if md["rule"] == "reverse" else "other")
        groups.setdefault(md["group"], set()).add((md["rule"], md["context_kind"]))
    # Distilled rule under every context kind and, out of distribution, with the held-out paraphrase;
    # other rules only with the training context kind.
    assert groups["distilled"] == {("reverse", k) for k in (*CONTEXT_KINDS, "system_heldout")}
    assert groups["other"] == {(r.name, "system") for r in RULES if r.name != "reverse"}
    assert len(data.eval) == 3 * (len(CONTEXT_KINDS) + 1 + len(RULES) - 1)
    heldout = [r for r in data.eval if r["metadata"]["context_kind"] == "system_heldout"]
    system = [r for r in data.eval if r["metadata"]["context_kind"] == "system" and r["metadata"]["rule"] == "reverse"]
    assert [r["prompt"] for r in heldout] == [r["prompt"] for r in system]  # same questions, other wording
    assert all(h["context"] != s["context"] for h, s in zip(heldout, system))
    rec = data.train[0]
    assert data.verify(rec["answer"] + "\n", rec) and not data.verify("nope", rec)


def test_toy_rules_task_demos_and_several_rules():
    data = load_task(_cfg(distill_rules=["sort", "upper"], context_kind="demos", k_demos=2, train_size=5,
                          eval_n_per_rule=2))
    assert len(data.train) == 10
    assert {r["metadata"]["rule"] for r in data.train} == {"sort", "upper"}
    assert all(r["context"].count("\n") == 2 for r in data.train)  # "Examples:" + 2 demos
    distilled = {r["metadata"]["rule"] for r in data.eval if r["metadata"]["group"] == "distilled"}
    assert distilled == {"sort", "upper"}
    assert {r["metadata"]["context_kind"] for r in data.eval if r["metadata"]["group"] == "other"} == {"demos"}


def test_toy_rules_unknown_rule():
    with pytest.raises(ValueError, match="unknown toy-world rule 'revers'"):
        load_task(_cfg(distill_rules=["revers"]))


def test_toy_rules_bad_context_kind():
    with pytest.raises(ValueError, match="context_kind must be system or demos"):
        load_task(_cfg(context_kind="none"))


def test_jsonl_task_needs_train_file():
    with pytest.raises(DatasetError, match="task.train_file"):
        load_task(_jsonl())


def test_jsonl_task_loads_files(tmp_path):
    train = _write(tmp_path, [_j(prompt="abc", context="rev", answer="cba")], "train.jsonl")
    data = load_task(_jsonl(train_file=train))
    assert data.train == [{"prompt": "abc", "context": "rev", "answer": "cba", "metadata": {"row": f"{train}:1"}}]
    assert data.eval == []
    ev = _write(tmp_path, [_j(prompt="x", context="c1", answer="y"), _j(prompt="z", context="c2")], "eval.jsonl")
    data = load_task(_jsonl(train_file=train, eval_file=ev))
    # every evaluation record is scored with its context and without it
    assert [(r["prompt"], r["context"], r["metadata"]["context_kind"]) for r in data.eval] == [
        ("x", "c1", "context"), ("x", "", "none"), ("z", "c2", "context"), ("z", "", "none")]
    assert data.verify(" y ", data.eval[0]) and not data.verify("x", data.eval[0])


def test_unknown_task_name():
    with pytest.raises(ValueError, match="unknown task.name 'gsm8k'"):
        load_task(_cfg(name="gsm8k"))
