"""opcd.algorithms: each conf/algo/*.yaml is one AlgoSpec, and bad combinations are refused."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from opcd.algorithms import TEACHER_SUPPORT, algo_spec
from opcd.config import AlgoConfig, register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPECTED = {  # name: (sampler, p_student, loss, teacher returns, trains)
    "opcd": ("student", 1.0, "topk_reverse_kl", "student_topk", True),
    "opcd_nca": ("student", 1.0, "topk_reverse_kl", "student_topk", True),
    "offpolicy_cd": ("teacher", 0.0, "forward_kl", "topk", True),
    "sft": ("teacher", 0.0, "nll", "topk", True),
    "gkd": ("mix", 0.5, "jsd", "full", True),
    "icl": ("student", 1.0, "topk_reverse_kl", "student_topk", False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_algo_yaml_builds_its_spec(name):
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"algo={name}"])
    spec = algo_spec(cfg.algo)
    assert (spec.sampler, spec.p_student, spec.loss, spec.teacher_returns, spec.trains) == EXPECTED[name]
    assert spec.steps(7) == (7 if spec.trains else 0)
    assert spec.rollout_logprobs == (cfg.algo.top_k if spec.student_topk else 1)


def test_every_algo_yaml_is_covered():
    assert {p.stem for p in (CONF / "algo").glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("kw,msg", [
    (dict(loss="kl"), "unknown algo.loss 'kl'"),
    (dict(sampler="both"), "unknown algo.sampler 'both'"),
    (dict(temperature=0.0), "algo.temperature must be > 0"),
    (dict(nca_beta=-1.0), "must be >= 0"),
    (dict(sampler="mix", gkd_lambda=1.5), "gkd_lambda must be in [0, 1]"),
    (dict(sampler="teacher"), "needs student rollouts"),
])
def test_bad_combinations_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        algo_spec(AlgoConfig(**kw))


def test_teacher_support_covers_every_loss_the_objective_knows():
    from opcd.learner import objective

    assert objective.TEACHER_SUPPORT is TEACHER_SUPPORT
