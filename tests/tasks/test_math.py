"""The math task (opcd.tasks.math) and the row reading it shares with the other real-data tasks
(opcd.tasks.tables): JSONL / Parquet / Hugging Face loading, errors, final-answer verification."""
import sys
import types
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from opcd import config as C
from opcd.tasks import load_task
from opcd.tasks import math as M
from opcd.tasks import tables
from opcd.tasks.records import DatasetError
from opcd.tasks.tables import write_rows

CONF = Path(__file__).resolve().parents[2] / "conf"
C.register_configs()
GSM8K = [{"question": "Tom has 40 apples and buys 2. How many?", "answer": "40 + 2 = <<40+2=42>>42\n#### 42"},
         {"question": "What is 1000 + 234?", "answer": "#### 1,234"},
         {"question": "Half of 3/2?", "answer": "#### 3/4"}]


def cfg(**kw):
    return OmegaConf.structured(C.MathTaskConfig(**kw))


def compose_task(task: str, overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"task={task}", *overrides]).task


# ---------------------------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------------------------
CASES = [  # (response, gold, correct?)
    (r"So the total is $\boxed{42}$.", "42", True),
    ("40 + 2 = 42\n#### 42", "42", True),
    ("The answer is 42.", "42", True),
    ("The final answer is: 42", "42", True),
    (r"\boxed{1,000}", "1000", True),
    ("The answer is 1,234.", "1,234", True),
    ("#### 1234", "1,234", True),
    (r"\boxed{\frac{3}{4}}", "3/4", True),
    (r"\boxed{\dfrac34}", "0.75", True),
    ("The answer is 0.5", r"\frac{1}{2}", True),
    (r"\boxed{-7}", "-7", True),
    (r"\boxed{41}", "42", False),
    ("The answer is 41.", "42", False),
    ("I had 42 apples, but the answer is 41.", "42", False),
    (r"\boxed{\frac{3}{5}}", "3/4", False),
    ("#### 1,235", "1,234", False),
    ("I do not know.", "42", False),
    ("", "42", False),
    (r"<think>maybe \boxed{42}</think> The answer is 41.", "42", False),  # the draft inside <think> does not count
]


@pytest.mark.parametrize("response,gold,ok", CASES)
def test_fallback_verifier(monkeypatch, response, gold, ok):
    monkeypatch.setattr(M, "_math_verify", lambda: None)  # as if math-verify were not installed
    assert M.verify_answer(response, gold) is ok
    assert M.verify(response, {"answer": gold}) is ok


@pytest.mark.parametrize("response,gold,ok", CASES)
def test_math_verify_verifier(response, gold, ok):
    pytest.importorskip("math_verify")
    assert M.verify_answer(response, gold) is ok


def test_math_verify_crash_falls_back(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("parser crashed")

    monkeypatch.setattr(M, "_math_verify", lambda: types.SimpleNamespace(parse=boom, verify=boom))
    assert M.verify_answer(r"\boxed{42}", "42") and not M.verify_answer(r"\boxed{43}", "42")


def test_answer_extraction_helpers():
    assert M.gold_answer("work\n#### 1,234") == "1,234"
    assert M.gold_answer(r"so $\boxed{\frac{1}{2}}$") == r"\frac{1}{2}"
    assert M.gold_answer(" 17 ") == "17"
    assert M.last_boxed(r"\boxed{1} then \boxed{x^{2}}") == "x^{2}" and M.last_boxed("none") is None
    assert M.extract_answer("3 apples and 5 pears") == "5"
    assert M.to_number(r"\$1,000.50") == M.Fraction("1000.5") and M.to_number("12%") == 12
    assert M.to_number(r"-\frac{3}{4}") == M.Fraction(-3, 4) and M.to_number("abc") is None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def test_gsm8k_jsonl_with_experience_file(tmp_path):
    exp = tmp_path / "experience.txt"
    exp.write_text("Check units. Add before you multiply.")
    data = load_task(cfg(train_file=write_rows(tmp_path / "train.jsonl", GSM8K), context_file=str(exp),
                         eval_file=write_rows(tmp_path / "test.jsonl", GSM8K[:2]), instruction="Box it."))
    assert [r["answer"] for r in data.train] == ["42", "1,234", "3/4"]
    r = data.train[0]
    assert r["prompt"] == GSM8K[0]["question"] + "\n\nBox it." and r["context"] == exp.read_text()
    assert r["metadata"]["group"] == "distilled" and r["metadata"]["context_kind"] == "experience"
    assert r["metadata"]["row"].endswith("train.jsonl:1") and not r["metadata"].get("retain")
    assert [(e["metadata"]["context_kind"], bool(e["context"])) for e in data.eval] == [
        ("experience", True), ("none", False)] * 2
    assert {e["metadata"]["group"] for e in data.eval} == {"distilled"}
    assert data.verify(r"\boxed{42}", data.eval[0]) and not data.verify("#### 41", data.eval[0])


def test_dapo_parquet_nested_columns_and_inline_context(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Compute 6*7."}],
             "reward_model": {"ground_truth": "42", "style": "rule"}},
            {"prompt": [{"role": "user", "content": "Compute 2^10."}], "reward_model": {"ground_truth": "1024"}}]
    data = load_task(cfg(train_file=write_rows(tmp_path / "dapo.parquet", rows), question_column="prompt",
                         answer_column="reward_model.ground_truth", context="Think in small steps."))
    assert [(r["prompt"], r["answer"], r["context"]) for r in data.train] == [
        ("Compute 6*7.", "42", "Think in small steps."), ("Compute 2^10.", "1024", "Think in small steps.")]
    assert data.eval == []  # no eval_file and no dataset: no periodic evaluation


def test_empty_context_and_subsets(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", GSM8K)
    data = load_task(cfg(train_file=path, eval_file=path, train_size=2, eval_n_per_rule=1))
    assert len(data.train) == 2 and all(r["context"] == "" for r in data.train)
    assert [e["metadata"]["context_kind"] for e in data.eval] == ["none"]  # with == without: evaluated once


@pytest.mark.parametrize("rows,match", [
    ([{"question": "q"}], r"t\.jsonl:1: missing column 'answer' .*task\.answer_column"),
    ([{"question": "q", "answer": "#### 1"}, {"answer": "#### 2"}], r"t\.jsonl:2: missing column 'question'"),
    ([{"question": "q", "answer": None}], r"t\.jsonl:1: column 'answer' is null"),
    ([{"question": "q", "answer": "####  "}], r"t\.jsonl:1: column 'answer' holds no final answer"),
    ([{"question": {"a": 1}, "answer": "1"}], r"t\.jsonl:1: column 'question' must be text"),
    ([{"question": "  ", "answer": "1"}], r"t\.jsonl:1: empty 'prompt'"),
])
def test_bad_rows_name_the_row_and_fix(tmp_path, rows, match):
    with pytest.raises(DatasetError, match=match):
        load_task(cfg(train_file=write_rows(tmp_path / "t.jsonl", rows)))


def test_bad_files(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "1"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: malformed JSON"):
        tables.read_file(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match=r"bad\.parquet: not a readable Parquet file"):
        tables.read_file(str(tmp_path / "bad.parquet"))
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"unknown file type '\.csv'.*\.jsonl.*\.parquet"):
        tables.read_file(str(tmp_path / "d.csv"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="is empty"):
        tables.read_file(str(tmp_path / "empty.jsonl"))
    with pytest.raises(DatasetError, match="does not exist"):
        tables.read_file(str(tmp_path / "missing.parquet"))
    with pytest.raises(DatasetError, match=r"task=math needs training rows: task\.train_file=.*task\.dataset="):
        load_task(cfg())
    with pytest.raises(DatasetError, match=r"task\.context_file .* does not exist"):
        load_task(cfg(train_file=write_rows(tmp_path / "t.jsonl", GSM8K), context_file=str(tmp_path / "no.txt")))


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets (a fake `datasets` module: tests never touch the network)
# ---------------------------------------------------------------------------------------------
def test_hub_dataset_is_read_by_name_config_and_split(monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return GSM8K if split == "train" else GSM8K[:1]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_task(cfg(dataset="openai/gsm8k", dataset_config="main", eval_split="test"))
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert len(data.train) == 3 and len(data.eval) == 1
    assert data.train[1]["metadata"]["row"] == "openai/gsm8k[train] row 2"


def test_hub_dataset_offline_names_the_fix(monkeypatch):
    def load_dataset(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DatasetError, match=r"could not load Hugging Face dataset 'openai/gsm8k'.*ConnectionError"
                                           r".*to_parquet.*task\.train_file="):
        load_task(cfg(dataset="openai/gsm8k", dataset_config="main"))


def test_hub_dataset_without_the_datasets_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DatasetError, match=r"needs the datasets library: pip install datasets"):
        load_task(cfg(dataset="openai/gsm8k"))


def test_local_file_wins_over_the_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # would fail if the hub were asked
    data = load_task(cfg(dataset="openai/gsm8k", train_file=write_rows(tmp_path / "t.jsonl", GSM8K), eval_split=""))
    assert len(data.train) == 3 and data.eval == []


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
def test_math_config_composes_and_loads(tmp_path):
    task = compose_task("math", [f"task.train_file={write_rows(tmp_path / 't.jsonl', GSM8K)}"])
    assert task.name == "math" and task.question_column == "question" and task.answer_column == "answer"
    assert task.instruction.endswith(r"within \boxed{}.") and task.context == "" and task.context_file is None
    data = load_task(task)
    assert data.train[0]["prompt"].endswith(r"\boxed{}.") and data.train[2]["answer"] == "3/4"
