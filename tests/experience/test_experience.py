"""opcd.experience: pure logic (templates, demos, truncation, selection), the pipeline on a fake model,
and ``task.experience_file`` in load_task. The CLI on the shipped toy model: test_experience_cli.py."""
import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from opcd import config as C
from opcd.experience.items import (DEFAULT_PROMPT, LLM_HEADER, Item, Trace, demo_items, fill_template, llm_items,
                                   load_template, render, select_best, truncate)
from opcd.experience.pipeline import load_problems, run_pipeline
from opcd.tasks import load_task, toy_world
from opcd.tasks.experience_context import EXPERIENCE_KIND, read_experience_file
from opcd.tasks.records import DatasetError


def _exp_cfg(**kw):
    """ExperienceConfig with the task of ``task.name`` (default toy_rules: 64 problems, no retain records)."""
    cfg = OmegaConf.structured(C.ExperienceConfig)
    name = kw.pop("task.name", "toy_rules")
    cfg.task = C.ToyRulesTaskConfig(retain_ratio=0.0, train_size=64) if name == "toy_rules" else C.TASK_SCHEMAS[name](name=name)
    for k, v in kw.items():
        OmegaConf.update(cfg, k, v)
    return cfg


# --- templates ----------------------------------------------------------------------------------
def test_fill_template_is_literal_and_single_pass():
    t = Trace(problem="solve {answer} and \\frac{a}{b}", answer="42", correct=False)
    out = fill_template('P: {problem} | A: {answer} | {verdict} | {"json": 1} {other}', t)
    assert out == 'P: solve {answer} and \\frac{a}{b} | A: 42 | incorrect | {"json": 1} {other}'
    assert fill_template("{verdict}", Trace("p", "a", True)) == "correct"


def test_load_template_default_and_errors(tmp_path):
    text = load_template(None)
    assert DEFAULT_PROMPT.is_file() and all(k in text for k in ("{problem}", "{answer}", "{verdict}"))
    bad = tmp_path / "t.txt"
    bad.write_text("only {problem}")
    with pytest.raises(ValueError, match=r"\{answer\}"):
        load_template(str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_template(str(tmp_path / "nope.txt"))


# --- items and rendering ------------------------------------------------------------------------
def test_format_demos_unchanged_by_refactor():
    rule = toy_world.get_rule("reverse")
    assert toy_world.format_demos(rule, ["abc", "hello"]) == "Examples:\nabc -> cba\nhello -> olleh"


def test_demo_items_keep_correct_unique_traces_in_toy_format():
    traces = [Trace("abc", "cba", True), Trace("xyz", "xzy", False), Trace("abc", "cba", True),
              Trace("hello", "olleh", True), Trace("qq", "", True)]
    items = demo_items(traces)
    assert [it.text for it in items] == ["abc -> cba", "hello -> olleh"]
    assert render(items, "demos") == toy_world.format_demos(toy_world.get_rule("reverse"), ["abc", "hello"])
    assert render([], "demos") == "" and render([], "llm") == ""


def test_llm_items_one_line_each():
    traces = [Trace("p1", "a", True), Trace("p2", "b", False), Trace("p3", "c", True)]
    items = llm_items(traces + traces[:1], ["  Check the\n  units. ", "   ", "Work backwards.", "Check the units."])
    assert [(it.text, it.correct) for it in items] == [("Check the units.", True), ("Work backwards.", True)]
    assert render(items, "llm") == f"{LLM_HEADER}\n- Check the units.\n- Work backwards."


# --- truncation ----------------------------------------------------------------------------------
def _items(*spec):
    return [Item(f"{p} -> {p[::-1]}", ok, p, p[::-1]) for p, ok in spec]


def test_truncate_newest_keeps_latest_whole_items_in_order(tok):
    items = _items(("aaa", True), ("bbbb", True), ("cc", True), ("ddddd", True))
    count = lambda s: len(tok.encode(s, add_special_tokens=False))  # noqa: E731  (char tokenizer: 1 token/char)
    assert count(render(items, "demos")) == len(render(items, "demos"))
    limit = len("Examples:\ncc -> cc\nddddd -> ddddd")
    kept = truncate(items, "demos", count, limit, "newest")
    assert [it.problem for it in kept] == ["cc", "ddddd"]
    assert [it.problem for it in truncate(items, "demos", count, limit + 1, "newest")] == ["cc", "ddddd"]
    # The newest item alone is too long (24 tokens): it is skipped and a shorter older one goes in.
    assert [it.problem for it in truncate(items, "demos", count, 23, "newest")] == ["cc"]
    assert truncate(items, "demos", count, 0, "newest") == items  # 0 = no limit
    assert truncate(items, "demos", count, 5, "newest") == []  # not even one item fits
    for n in range(0, 60):
        assert n == 0 or count(render(truncate(items, "demos", count, n, "newest"), "demos")) <= n


def test_truncate_best_prefers_correct_then_newest():
    items = [Item("a" * 5, True), Item("b" * 5, False), Item("c" * 5, True), Item("d" * 5, False)]
    size = len(render(items[:2], "llm"))  # room for exactly two items
    assert [it.text[0] for it in truncate(items, "llm", len, size, "best")] == ["a", "c"]
    assert [it.text[0] for it in truncate(items, "llm", len, size, "newest")] == ["c", "d"]
    with pytest.raises(ValueError, match="truncation"):
        truncate(items, "llm", len, size, "oldest")


# --- candidate selection -------------------------------------------------------------------------
def test_select_best_accuracy_then_shorter_then_earlier():
    c = lambda acc, tokens: {"accuracy": acc, "tokens": tokens}  # noqa: E731
    assert select_best([c(0.5, 10), c(0.8, 90), c(0.7, 5)]) == 1
    assert select_best([c(0.8, 60), c(0.8, 50), c(0.8, 50)]) == 1
    assert select_best([c(None, 0), c(0.0, 70)]) == 1  # an empty candidate is never chosen
    with pytest.raises(ValueError, match="no candidate"):
        select_best([c(None, 0), c(None, 0)])


# --- the pipeline on a fake model ----------------------------------------------------------------
def _fake_model(tok, calls):
    """Answers the reverse rule iff it has a system context; writes a fixed lesson for extraction prompts."""
    def generate(prompts, *, temperature, top_p, max_tokens, seed):
        out = []
        for ids in prompts:
            text = tok.decode(ids)
            system = text.split("<|system|>")[1].split("<|end|>")[0] if "<|system|>" in text else ""
            user = text.split("<|user|>")[1].split("<|end|>")[0]
            calls.append((system, user, temperature, seed))
            if "Verdict" in user:
                out.append(" keep the\nlast letter first ")
            else:
                out.append(user[::-1] if system and len(user) > 3 else "zz")  # 3-letter inputs: always wrong
        return out
    return generate


@pytest.mark.parametrize("extractor", ["demos", "llm"])
def test_pipeline_with_fake_model(tok, extractor):
    cfg = _exp_cfg(extractor=extractor, n_problems=6, candidates=3, max_experience_tokens=80, n_validation=10,
                   **{"model.max_model_len": 1024})  # the default extraction prompt is ~330 characters
    problems, validation, verify = load_problems(cfg)
    assert len(problems) == 64 and all(p["context"] for p in problems)  # solved with the rule's description
    assert all(not v["context"] and toy_world.split_of(v["prompt"]) == "validation" for v in validation)
    calls = []
    rep = run_pipeline(cfg, problems, validation, verify, tok, _fake_model(tok, calls), progress=False)
    cands = rep["candidates"]
    assert len(cands) == 3 and [c["seed"] for c in cands] == [0, 1, 2]
    assert rep["no_context_accuracy"] == 0.0
    solving = [c for c in calls if c[3] is not None]
    assert len(solving) == 18 and all(c[2] == cfg.rollout.temperature for c in solving)
    assert len({c[1] for c in solving}) == 18  # disjoint problem subsets
    for c in cands:
        assert c["tokens"] <= 80 and c["kept_items"] <= c["items"]
        assert c["text"].startswith("Examples:\n" if extractor == "demos" else LLM_HEADER)
    if extractor == "demos":
        lines = [ln for c in cands for ln in c["text"].splitlines()[1:]]
        assert lines and all(x[::-1] == y and len(x) > 3 for x, y in (ln.split(" -> ") for ln in lines))
    else:
        assert "- keep the last letter first" in rep["experience"]
        extraction = [c[1] for c in calls if "Verdict" in c[1]]
        assert len(extraction) == 18 and any("incorrect" in e for e in extraction)
    best = max(c["accuracy"] for c in cands)
    assert rep["chosen_accuracy"] == best
    assert rep["chosen"] == min(i for i, c in enumerate(cands) if c["accuracy"] == best and
                                c["tokens"] == min(d["tokens"] for d in cands if d["accuracy"] == best))
    assert rep["experience"] == cands[rep["chosen"]]["text"]


def test_pipeline_without_any_correct_trace_fails_clearly(tok):
    cfg = _exp_cfg(n_problems=4, candidates=2, n_validation=4, use_context=False)
    problems, validation, verify = load_problems(cfg)
    with pytest.raises(ValueError, match="no candidate has any experience text"):
        run_pipeline(cfg, problems, validation, verify, tok, _fake_model(tok, []), progress=False)
    with pytest.raises(ValueError, match="need 1000 training problems"):
        run_pipeline(_exp_cfg(n_problems=500, candidates=2), problems, validation, verify, tok, _fake_model(tok, []),
                     progress=False)


def test_pipeline_refuses_prompts_longer_than_the_model(tok):
    cfg = _exp_cfg(extractor="llm", n_problems=2, candidates=1, n_validation=2)  # toy model: 256 tokens
    problems, validation, verify = load_problems(cfg)
    with pytest.raises(ValueError, match="does not fit model.max_model_len=256"):
        run_pipeline(cfg, problems, validation, verify, tok, _fake_model(tok, []), progress=False)


@pytest.mark.parametrize("overrides,match", [
    ({"extractor": "summary"}, "unknown extractor"),
    ({"truncation": "oldest"}, "unknown truncation"),
    ({"task.distill_rules": ["reverse", "sort"]}, "one rule"),
    ({"task.name": "sysprompt"}, "supports task"),
    ({"task.experience_file": "x.txt"}, "must be null"),
    ({"task.name": "jsonl", "task.train_file": "x.jsonl"}, "validation_file"),
    ({"task.name": "math", "task.train_file": "x.jsonl", "task.eval_split": ""}, "or task.eval_file"),
    ({"candidates": 0}, "positive"),
])
def test_load_problems_config_errors(tmp_path, overrides, match):
    if overrides.get("task.train_file"):
        (tmp_path / "x.jsonl").write_text('{"prompt": "p", "context": "c", "question": "q", "answer": "1"}\n')
        overrides = {**overrides, "task.train_file": str(tmp_path / "x.jsonl")}
    with pytest.raises(ValueError, match=match):
        load_problems(_exp_cfg(**overrides))


def test_load_problems_math_validates_on_the_eval_questions_without_context(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(12)]
    for name, part in (("train", rows[:8]), ("eval", rows[8:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    cfg = _exp_cfg(**{"task.name": "math", "task.train_file": str(tmp_path / "train.jsonl"),
                      "task.eval_file": str(tmp_path / "eval.jsonl"), "task.train_size": 0, "n_validation": 3})
    problems, validation, verify = load_problems(cfg)
    assert [p["prompt"].split("?")[0] for p in problems] == [f"What is {i} + {i}" for i in range(8)]
    assert [v["prompt"].split("?")[0] for v in validation] == [f"What is {i} + {i}" for i in (8, 9, 10)]
    assert all(v["context"] == "" for v in validation)
    assert verify("so the answer is \\boxed{16}", validation[0]) and not verify("\\boxed{15}", validation[0])


def test_experience_yaml_composes():
    from hydra import compose, initialize_config_dir

    C.register_configs()
    with initialize_config_dir(config_dir=str(Path(C.__file__).parents[1] / "conf"), version_base="1.3"):
        cfg = compose("experience", overrides=["candidates=2"])
    assert set(cfg.keys()) == set(C.ExperienceConfig.__dataclass_fields__)
    assert cfg.candidates == 2 and cfg.extractor == "demos" and cfg.max_experience_tokens == 64
    assert cfg.task.name == "toy_rules" and cfg.task.retain_ratio == 0.0 and cfg.task.experience_file is None


# --- task.experience_file -----------------------------------------------------------------------
def test_read_experience_file(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("Examples:\nab -> ba\n\n")
    assert read_experience_file(str(p)) == "Examples:\nab -> ba"
    p.write_text(" \n")
    with pytest.raises(DatasetError, match="empty"):
        read_experience_file(str(p))
    with pytest.raises(DatasetError, match="does not exist"):
        read_experience_file(str(tmp_path / "nope.txt"))


def test_load_task_toy_rules_with_experience_file(tmp_path):
    text = "Examples:\nabcd -> dcba"
    (tmp_path / "e.txt").write_text(text + "\n")
    kw = dict(train_size=8, retain_ratio=1.0, eval_n_per_rule=3)
    plain = load_task(C.ToyRulesTaskConfig(**kw))
    data = load_task(C.ToyRulesTaskConfig(**kw, experience_file=str(tmp_path / "e.txt")))
    assert len(data.train) == len(plain.train)
    for new, old in zip(data.train, plain.train):
        retain = old["metadata"].get("retain", False)
        assert new["context"] == (old["context"] if retain else text) and new["prompt"] == old["prompt"]
    distilled = [r for r in data.eval if r["metadata"]["group"] == "distilled"]
    kinds = Counter(r["metadata"]["context_kind"] for r in distilled)
    assert kinds == {EXPERIENCE_KIND: 3, "none": 3}  # system/demos/... variants of a prompt collapse into one
    assert all(r["context"] == (text if r["metadata"]["context_kind"] == EXPERIENCE_KIND else "") for r in distilled)
    others = [r for r in data.eval if r["metadata"]["group"] == "other"]
    assert others == [r for r in plain.eval if r["metadata"]["group"] == "other"]  # untouched


def test_load_task_jsonl_with_experience_file(tmp_path):
    rows = [{"prompt": "p1", "context": "old", "answer": "a"}, {"prompt": "p2", "context": "", "answer": "b"},
            {"prompt": "p3", "context": "keep", "metadata": {"retain": True}}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "e.txt").write_text("lesson one")
    d = str(tmp_path / "d.jsonl")
    data = load_task(C.JsonlTaskConfig(train_file=d, eval_file=d, experience_file=str(tmp_path / "e.txt")))
    assert [r["context"] for r in data.train] == ["lesson one", "lesson one", "keep"]
    assert [(r["prompt"], r["context"], r["metadata"]["context_kind"]) for r in data.eval] == [
        ("p1", "lesson one", EXPERIENCE_KIND), ("p1", "", "none"), ("p2", "", "context"), ("p2", "", "none"),
        ("p3", "keep", "context"), ("p3", "", "none")]
