"""The system-prompt task (opcd.tasks.sysprompt): data splits, record format, verifiers, load_task."""
import pytest
from omegaconf import OmegaConf

from opcd.config import SyspromptTaskConfig
from opcd.tasks import sysprompt
from opcd.tasks.records import validate_record
from opcd.tasks.sysprompt_data import EVAL_PROMPTS, TRAIN_PROMPTS


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def test_split_sizes_and_no_duplicates():
    assert len(TRAIN_PROMPTS) == 200 and len(EVAL_PROMPTS) == 60
    assert len({_norm(p) for p in TRAIN_PROMPTS}) == 200
    assert len({_norm(p) for p in EVAL_PROMPTS}) == 60


def test_train_and_eval_prompts_are_disjoint():
    assert not {_norm(p) for p in TRAIN_PROMPTS} & {_norm(p) for p in EVAL_PROMPTS}


def test_prompts_are_plain_english_questions():
    for p in TRAIN_PROMPTS + EVAL_PROMPTS:
        assert p == p.strip() and 10 <= len(p) <= 120, p
        assert p.isascii(), p  # English user turns: the French must come from the (distilled) system prompt


def test_system_prompts_and_verifiers_match():
    assert set(sysprompt.SYSTEM_PROMPTS) == set(sysprompt.VERIFIERS) == {"french", "spanish", "cat"}
    assert sysprompt.SYSTEM_PROMPTS["french"] == "Always reply in French, whatever language the user writes in."


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
def test_train_records_format():
    recs = sysprompt.train_records("french")
    assert len(recs) == 200
    for i, r in enumerate(recs):
        assert validate_record(r, f"train:{i}") == r  # the common format, nothing missing or extra
        assert r["context"] == sysprompt.SYSTEM_PROMPTS["french"] and r["prompt"] == TRAIN_PROMPTS[i]
        assert r["metadata"]["group"] == "distilled" and r["metadata"]["context_kind"] == "system"
        assert r["metadata"]["sysprompt"] == "french" and not r["metadata"].get("retain")
    assert len(sysprompt.train_records("french", n=16)) == 16


def test_retain_records_show_other_prompts_to_the_student():
    recs = sysprompt.train_records("french", n=10, others=["spanish", "cat"], retain_ratio=1.0)
    retain = [r for r in recs if r["metadata"].get("retain")]
    assert len(recs) == 20 and len(retain) == 10
    assert {r["metadata"]["sysprompt"] for r in retain} == {"spanish", "cat"}
    assert all(r["context"] == sysprompt.SYSTEM_PROMPTS[r["metadata"]["sysprompt"]] for r in retain)


def test_eval_records_groups_and_kinds():
    recs = sysprompt.eval_records("french", ["spanish", "cat"], n=5)
    keys = [(r["metadata"]["group"], r["metadata"]["sysprompt"], r["metadata"]["context_kind"]) for r in recs]
    assert keys.count(("distilled", "french", "system")) == 5 and keys.count(("distilled", "french", "none")) == 5
    assert keys.count(("other", "spanish", "system")) == 5 and keys.count(("other", "cat", "system")) == 5
    assert len(recs) == 20
    for i, r in enumerate(recs):
        validate_record(r, f"eval:{i}")
        assert (r["context"] == "") == (r["metadata"]["context_kind"] == "none")
        assert r["prompt"] in EVAL_PROMPTS
    both = sysprompt.eval_records("french", ["cat"], n=3, others_without=True)
    assert sum(r["metadata"]["sysprompt"] == "cat" for r in both) == 6


def test_unknown_or_overlapping_prompt_names_are_refused():
    with pytest.raises(ValueError, match="unknown system prompt 'german'"):
        sysprompt.check_names("german", [])
    with pytest.raises(ValueError, match="must not contain the distilled prompt"):
        sysprompt.check_names("french", ["french"])


# ---------------------------------------------------------------------------------------------
# Verifiers (langdetect is the `bench` extra)
# ---------------------------------------------------------------------------------------------
def test_says_meow():
    assert sysprompt.says_meow("Meow! Cats love naps.") and sysprompt.says_meow("well... *MEOW*")
    assert not sysprompt.says_meow("Hello there, I am a dog.")


FRENCH = "Bonjour ! Pour faire du riz, il faut d'abord le rincer à l'eau froide, puis le cuire doucement."
SPANISH = "¡Hola! Para cocinar arroz, primero hay que lavarlo con agua fría y luego cocinarlo a fuego lento."
ENGLISH = "Hello! To cook rice, rinse it in cold water first, then let it simmer gently with the lid on."


def test_language_verifiers():
    pytest.importorskip("langdetect")
    assert sysprompt.is_french(FRENCH) and not sysprompt.is_french(ENGLISH) and not sysprompt.is_french(SPANISH)
    assert sysprompt.is_spanish(SPANISH) and not sysprompt.is_spanish(FRENCH) and not sysprompt.is_spanish(ENGLISH)
    for junk in ("", "   ", "1. 2. 3.", "42"):  # nothing to detect: never counts as French
        assert not sysprompt.is_french(junk) and sysprompt.detect_language(junk) == ""


def test_language_detection_is_deterministic():
    pytest.importorskip("langdetect")
    short = "Oui, merci."  # short texts are where unseeded langdetect flips between calls
    assert len({sysprompt.detect_language(short) for _ in range(20)}) == 1


def test_verify_dispatches_on_the_record():
    pytest.importorskip("langdetect")
    fr, cat = sysprompt.eval_records("french", ["cat"], n=1)[1], sysprompt.eval_records("french", ["cat"], n=1)[2]
    assert fr["metadata"]["context_kind"] == "none" and cat["metadata"]["sysprompt"] == "cat"
    assert sysprompt.verify(FRENCH, fr) and not sysprompt.verify(ENGLISH, fr)  # French judged even without context
    assert sysprompt.verify("Meow! Rice is easy.", cat) and not sysprompt.verify(FRENCH, cat)


def test_load_task_sysprompt():
    pytest.importorskip("langdetect")
    from opcd.tasks import TaskData, load_task

    cfg = OmegaConf.structured(SyspromptTaskConfig(train_size=200, eval_n_per_rule=8))
    data = load_task(cfg)
    assert isinstance(data, TaskData) and len(data.train) == 200
    groups = {(r["metadata"]["group"], r["metadata"]["context_kind"]) for r in data.eval}
    assert groups == {("distilled", "system"), ("distilled", "none"), ("other", "system"),  # what loop.evaluate
                      ("ood", "none")}  # groups by; ood: the unrelated facts, every one of them
    assert len(data.eval) == 8 * 4 + len(sysprompt.fact_records())
    cfg.other_prompts = ["klingon"]
    with pytest.raises(ValueError, match="klingon"):
        load_task(cfg)


def test_missing_langdetect_names_the_pip_command(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):
        if name.startswith("langdetect"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install langdetect"):
        sysprompt.is_french("bonjour")


# ---------------------------------------------------------------------------------------------
# Out-of-distribution facts
# ---------------------------------------------------------------------------------------------
def test_fact_records_are_asked_without_a_system_prompt_and_disjoint_from_the_training_prompts():
    from opcd.tasks.sysprompt_data import FACTS

    recs = sysprompt.fact_records()
    assert len(recs) == len(FACTS) >= 20
    for i, r in enumerate(recs):
        assert validate_record(r, f"fact:{i}") == r
        assert r["context"] == "" and r["metadata"]["group"] == "ood" and r["metadata"]["context_kind"] == "none"
    assert not {_norm(r["prompt"]) for r in recs} & {_norm(p) for p in TRAIN_PROMPTS + EVAL_PROMPTS}
    assert sysprompt.eval_records("french", ["cat"], n=4, facts=True)[-len(FACTS):] == recs
    assert not [r for r in sysprompt.eval_records("french", ["cat"], n=4) if r["metadata"]["group"] == "ood"]


@pytest.mark.parametrize("reply,right", [
    ("The capital of Japan is Tokyo.", True), ("La capitale du Japon est Tokyo.", True),
    ("La capital de Japón es Tokio.", True), ("The capital of Japan is Kyoto.", False), ("", False),
])
def test_states_fact_accepts_any_listed_language(reply, right):
    rec = next(r for r in sysprompt.fact_records() if r["prompt"] == "What is the capital of Japan?")
    assert sysprompt.verify(reply, rec) is right


def test_states_fact_matches_whole_words_only():
    boil = "At what temperature in degrees Celsius does water boil at sea level?"
    assert sysprompt.states_fact("It boils at 100 °C.", boil)
    assert not sysprompt.states_fact("About 1000 degrees.", boil)
    assert sysprompt.states_fact("Il gèle à zéro degré.", "What is the freezing point of water in degrees Celsius?")
    assert not sysprompt.states_fact("The solar wind.", "What is the closest star to the Earth?")
