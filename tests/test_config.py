"""Hydra composition of conf/ against the typed schemas (opcd.config), and the YAML comment rule."""
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from opcd import config as C

CONF = Path(__file__).resolve().parents[1] / "conf"
C.register_configs()


def _compose(name="train", overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------
def test_default_train_config():
    cfg = _compose()
    assert cfg.experiment == "toy_opcd"
    assert cfg.algo.name == "opcd" and cfg.algo.loss == "topk_reverse_kl" and cfg.algo.nca_beta == 0.0
    assert cfg.task.name == "toy_rules" and list(cfg.task.distill_rules) == ["reverse"]
    assert cfg.rollout.engine == "vllm_cpu" and cfg.learner.backend == "gloo" and cfg.learner.device == "cpu"
    assert cfg.logger.kind == "wandb" and cfg.logger.mode == "offline"
    assert cfg.steps == 200 and cfg.prompts_per_step == 64 and cfg.eval_every == 20
    # Schema-only groups are filled from the dataclasses.
    assert cfg.teacher.micro_batch_size == C.TeacherConfig().micro_batch_size
    # Every schema field is present (struct mode: nothing else is).
    assert set(cfg.keys()) == set(C.TrainConfig.__dataclass_fields__)
    for group, schema in [("model", C.ModelConfig), ("task", C.ToyRulesTaskConfig), ("algo", C.AlgoConfig),
                          ("rollout", C.RolloutConfig), ("learner", C.LearnerConfig), ("logger", C.LoggerConfig)]:
        assert set(cfg[group].keys()) == set(schema.__dataclass_fields__), group


def test_model_path_resolves_to_shipped_asset():
    cfg = _compose()
    path = Path(cfg.model.path)
    assert path.is_absolute() and path == C.ASSETS / "toy-model"
    assert path.parent == Path(C.__file__).resolve().parent / "assets"


def test_yaml_values_override_schema_defaults():
    cfg = _compose()
    # conf/learner/cpu.yaml sets micro_batch_size 64 (schema default 32).
    assert C.LearnerConfig().micro_batch_size == 32 and cfg.learner.micro_batch_size == 64


@pytest.mark.parametrize("algo,loss,nca,extra", [
    ("opcd", "topk_reverse_kl", 0.0, {"renormalize_topk": False}),
    ("opcd_nca", "topk_reverse_kl", 0.5, {"renormalize_topk": False}),
    ("offpolicy_cd", "forward_kl", 0.0, {"renormalize_topk": True}),
    ("gkd", "jsd", 0.0, {"jsd_beta": 0.5, "gkd_lambda": 0.5}),
    ("sft", "nll", 0.0, {}),
])
def test_algo_options(algo, loss, nca, extra):
    cfg = _compose(overrides=[f"algo={algo}"])
    assert cfg.algo.name == algo
    assert cfg.algo.loss == loss and cfg.algo.nca_beta == nca
    for k, v in extra.items():
        assert cfg.algo[k] == v, k
    # Variants inherit the opcd defaults they don't override.
    assert cfg.algo.top_k == 16 and cfg.algo.lr == pytest.approx(3e-4)


def test_every_algo_loss_is_known_to_the_objective():
    from opcd.learner.objective import TEACHER_SUPPORT

    for f in sorted((CONF / "algo").glob("*.yaml")):
        assert _compose(overrides=[f"algo={f.stem}"]).algo.loss in TEACHER_SUPPORT, f.name


def test_cuda_rollout_and_learner():
    cfg = _compose(overrides=["rollout=cuda", "learner=cuda"])
    assert cfg.rollout.engine == "vllm_cuda" and cfg.rollout.num_gpus == 1
    assert cfg.learner.backend == "nccl" and cfg.learner.device == "cuda"
    assert cfg.learner.precision == "bf16" and cfg.learner.zero_stage == 2


def test_overrides_are_typed():
    cfg = _compose(overrides=["steps=5", "algo.nca_beta=0.25", "task.distill_rules=[sort,upper]"])
    assert cfg.steps == 5 and cfg.algo.nca_beta == 0.25 and list(cfg.task.distill_rules) == ["sort", "upper"]


def test_unknown_key_raises():
    with pytest.raises(ConfigCompositionException, match="algo.bogus"):
        _compose(overrides=["algo.bogus=1"])


def test_wrong_type_raises():
    with pytest.raises(ConfigCompositionException) as e:
        _compose(overrides=["steps=abc"])
    text = str(e.value) + str(e.value.__cause__)
    assert "steps" in text and "abc" in text


def test_unknown_group_option_raises():
    with pytest.raises(Exception, match="algo"):
        _compose(overrides=["algo=ppo"])


def test_jsonl_task_composes_and_demands_train_file():
    from opcd.tasks import load_task
    from opcd.tasks.records import DatasetError

    cfg = _compose(overrides=["task=jsonl"])
    assert cfg.task.name == "jsonl" and cfg.task.eval_file is None
    with pytest.raises(DatasetError, match="train_file"):
        load_task(cfg.task)


def test_eval_config():
    cfg = _compose("eval")
    assert set(cfg.keys()) == set(C.EvalConfig.__dataclass_fields__)
    assert cfg.split == "test" and list(cfg.rules) == [] and cfg.paraphrases == "train"
    assert cfg.rollout.threads == 2  # eval.yaml overrides the cpu rollout's 1 thread
    assert cfg.rollout.engine == "vllm_cpu" and cfg.model.max_model_len == 256
    cfg = _compose("eval", overrides=["n_per_rule=7", "rules=[reverse]"])
    assert cfg.n_per_rule == 7 and list(cfg.rules) == ["reverse"]
    with pytest.raises(ConfigCompositionException):
        _compose("eval", overrides=["n_per_rule=many"])


def test_structured_schemas_reject_bad_values():
    algo = OmegaConf.structured(C.AlgoConfig)
    with pytest.raises(Exception):
        algo.nca_beta = "high"
    with pytest.raises(Exception):
        algo.bogus = 1


# ---------------------------------------------------------------------------------------------
# Project rule: every field in conf/ carries a one-line comment
# ---------------------------------------------------------------------------------------------
_KV = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:\s*(.*)$")


def uncommented_fields(text: str) -> list[str]:
    """``key: value`` lines without a trailing ``# comment`` (defaults lists and block headers excluded)."""
    bad, in_defaults = [], False
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line[0] != " " and not s.startswith("-"):
            in_defaults = s.startswith("defaults:")
        if in_defaults:
            continue
        m = _KV.match(line)
        assert m, f"unexpected YAML line {line!r}"
        if m.group(2) and not re.search(r"\s#\s*\S", m.group(2)):
            bad.append(line)
    return bad


def test_uncommented_fields_checker():
    assert uncommented_fields("a: 1  # one\nb:\n  c: 2  # two\n") == []
    assert uncommented_fields("a: 1\nb: 2  #\n") == ["a: 1", "b: 2  #"]
    assert uncommented_fields("defaults:\n  - x\n  - y: z\n_self_: 1  # k\n") == []


YAMLS = sorted(p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml"))


def test_conf_tree_is_complete():
    assert {"train.yaml", "eval.yaml", "algo/opcd.yaml", "algo/opcd_nca.yaml", "algo/offpolicy_cd.yaml",
            "algo/gkd.yaml", "algo/sft.yaml", "rollout/cpu.yaml", "rollout/cuda.yaml", "learner/cpu.yaml",
            "learner/cuda.yaml", "task/toy_rules.yaml", "task/jsonl.yaml"} <= set(YAMLS)


@pytest.mark.parametrize("rel", YAMLS)
def test_every_yaml_field_has_a_comment(rel):
    text = (CONF / rel).read_text()
    assert text.lstrip().startswith("#"), f"{rel}: the file should open with a comment saying what it is"
    assert uncommented_fields(text) == [], rel
