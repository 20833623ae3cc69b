"""The fewshot task (opcd.tasks.fewshot): demonstrations as the context, labels, errors, verifier."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from opcd import config as C
from opcd.tasks import load_task
from opcd.tasks import fewshot as F
from opcd.tasks.records import DatasetError
from opcd.tasks.tables import write_rows

CONF = Path(__file__).resolve().parents[2] / "conf"
C.register_configs()
RTE = [{"premise": f"Premise number {i}.", "hypothesis": f"Hypothesis {i}.", "label": i % 2} for i in range(12)]
QQP = [{"question1": f"How do I learn {w}?", "question2": f"What is the best way to learn {w}?", "label": i % 2}
       for i, w in enumerate(["python", "rust", "go", "chess", "piano", "french"])]


def rows(data):
    return [(f"f:{i}", r) for i, r in enumerate(data, 1)]


def compose_task(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["task=fewshot", *overrides]).task


# ---------------------------------------------------------------------------------------------
# Records and demonstrations
# ---------------------------------------------------------------------------------------------
def test_records_prompts_contexts_and_labels():
    train, evals = F.build(rows(RTE), rows(RTE[:3]), n_shots=3, seed=0)
    assert len(train) == 12 and len(evals) == 6
    r = train[0]
    assert r["prompt"] == "Premise: Premise number 0.\nHypothesis: Hypothesis 0.\nAnswer:"
    assert r["answer"] == "entailment" and train[1]["answer"] == "not_entailment"
    demos = r["context"].split("\n\n")
    assert len(demos) == 3 and all(d.startswith("Premise: ") for d in demos)
    assert all(d.endswith(" entailment") or d.endswith(" not_entailment") for d in demos)
    assert r["metadata"]["context_kind"] == "demos" and r["metadata"]["label_words"] == ["entailment", "not_entailment"]
    assert [(e["metadata"]["context_kind"], e["context"].count("Premise:")) for e in evals] == [
        ("demos", 3), ("none", 0)] * 3


def test_a_query_is_never_its_own_demonstration():
    train, _ = F.build(rows(RTE[:4]), None, n_shots=3, seed=1)  # 3 shots from 4 rows: exactly the other three
    for r in train:
        assert r["prompt"] not in r["context"] and r["context"].count("Premise:") == 3


def test_demonstrations_are_seeded_and_vary_per_record():
    a, _ = F.build(rows(RTE), None, seed=0)
    b, _ = F.build(rows(RTE), None, seed=0)
    c, _ = F.build(rows(RTE), None, seed=1)
    assert a == b and a != c
    assert len({r["context"] for r in a}) > 1


def test_fixed_demonstrations_are_shared_and_not_queries():
    train, evals = F.build(rows(RTE), rows(RTE[:2]), n_shots=4, demos_fixed=True, seed=0)
    assert len(train) == 8 and len({r["context"] for r in train + evals if r["context"]}) == 1
    assert not any(r["prompt"] in train[0]["context"] for r in train)


def test_paraphrase_template_and_label_words():
    template = "Question 1: {question1}\nQuestion 2: {question2}\nSame meaning?"
    train, _ = F.build(rows(QQP), None, template=template, label_words=["no", "yes"], n_shots=2)
    assert train[1]["prompt"].startswith("Question 1: How do I learn rust?") and train[1]["answer"] == "yes"
    assert "Same meaning? no" in train[1]["context"] or "Same meaning? yes" in train[1]["context"]


@pytest.mark.parametrize("value,gold", [(0, "entailment"), (1, "not_entailment"), ("1", "not_entailment"),
                                        ("Not Entailment", "not_entailment"), (True, "not_entailment")])
def test_label_values(value, gold):
    assert F.label_word(value, F.DEFAULT_LABEL_WORDS, "f:1") == gold


@pytest.mark.parametrize("value,match", [(-1, r"f:1: label -1 .*GLUE test splits are unlabelled"),
                                         (2, r"f:1: label 2 matches none"), ("neutral", "matches none")])
def test_bad_labels(value, match):
    with pytest.raises(DatasetError, match=match):
        F.label_word(value, F.DEFAULT_LABEL_WORDS, "f:1")


def test_bad_inputs_name_the_fix():
    with pytest.raises(DatasetError, match=r"f:1: missing column 'premise', which task\.template uses"):
        F.build(rows([{"sentence1": "a", "sentence2": "b", "label": 0}] * 5), None)
    with pytest.raises(DatasetError, match=r"f:2: missing column 'label'.*task\.answer_column"):
        F.build(rows([RTE[0], {"premise": "p", "hypothesis": "h"}]), None, n_shots=1)
    with pytest.raises(DatasetError, match=r"task\.n_shots=4 needs .* 5 training rows; there are 4"):
        F.build(rows(RTE[:4]), None, n_shots=4)
    with pytest.raises(DatasetError, match=r"task\.template .* needs named \{column\} placeholders"):
        F.build(rows(RTE), None, template="Premise: {}")
    with pytest.raises(DatasetError, match=r"not a valid template"):
        F.build(rows(RTE), None, template="Premise: {premise")
    with pytest.raises(DatasetError, match=r"task\.label_words .* distinct"):
        F.build(rows(RTE), None, label_words=["Yes", "yes"])


# ---------------------------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("response,gold,ok", [
    ("entailment", "entailment", True),
    (" Entailment.\nThe hypothesis follows.", "entailment", True),
    ("Entailment, because the premise says so.", "entailment", True),
    ("not_entailment", "not_entailment", True),
    ("Not entailment.", "not_entailment", True),
    ("NOT-ENTAILMENT", "not_entailment", True),
    ("Not entailment.", "entailment", False),  # a shorter label inside a longer one does not count
    ("The answer is not entailment.", "not_entailment", True),
    ("Reasoning first.\nAnswer: entailment", "entailment", True),
    ("entailments", "entailment", False),
    ("I cannot tell.", "entailment", False),
    ("", "entailment", False),
])
def test_verify_nli(response, gold, ok):
    rec = {"answer": gold, "metadata": {"label_words": F.DEFAULT_LABEL_WORDS}}
    assert F.verify(response, rec) is ok


def test_verify_paraphrase_yes_no():
    rec = {"answer": "yes", "metadata": {"label_words": ["no", "yes"]}}
    assert F.verify("Yes, both ask the same thing.", rec) and not F.verify("No.", rec)
    assert not F.verify("Nope", rec)


# ---------------------------------------------------------------------------------------------
# load_task and config
# ---------------------------------------------------------------------------------------------
def test_fewshot_config_composes_and_loads_jsonl_and_parquet(tmp_path):
    task = compose_task([f"task.train_file={write_rows(tmp_path / 'train.jsonl', RTE)}",
                         f"task.eval_file={write_rows(tmp_path / 'dev.parquet', RTE[:2])}", "task.n_shots=2"])
    assert task.name == "fewshot" and list(task.label_words) == ["entailment", "not_entailment"]
    assert task.template == "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:" and task.eval_split == "validation"
    data = load_task(task)
    assert len(data.train) == 12 and len(data.eval) == 4
    assert data.eval[0]["metadata"]["row"].endswith("dev.parquet row 1")
    assert data.verify("entailment", data.eval[0]) and not data.verify("entailment", data.eval[2])


def test_fewshot_config_paraphrase_overrides(tmp_path):
    task = compose_task([f"task.train_file={write_rows(tmp_path / 'qqp.jsonl', QQP)}", "task.label_words=[no,yes]",
                         "task.template='Q1: {question1}\\nQ2: {question2}\\nSame?'", "task.demos_fixed=true",
                         "task.n_shots=2", "task.train_size=3"])
    data = load_task(task)
    assert len(data.train) == 3 and data.train[0]["prompt"].startswith("Q1: How do I learn python?\nQ2: What")
    assert len({r["context"] for r in data.train}) == 1
