"""Placement: bundles from config (fast), and (slow) a multi-actor run on one placement group:
2 rollout workers, the teacher and 2 DeepSpeed learner ranks with ZeRO-2 over gloo."""
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from opcd.actors import plan_bundles
from opcd.config import TrainConfig


def _cfg(**over):
    cfg = OmegaConf.structured(TrainConfig)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def test_one_bundle_per_actor_with_tensor_parallel_gpus():
    bundles, where = plan_bundles(_cfg(**{"rollout.num_workers": 2, "rollout.num_gpus": 1,
                                          "rollout.tensor_parallel_size": 2, "teacher.num_gpus": 1,
                                          "learner.num_ranks": 2, "learner.num_gpus": 1, "learner.num_cpus": 1}))
    assert bundles == [{"CPU": 0.5, "GPU": 2}, {"CPU": 0.5, "GPU": 2}, {"CPU": 0.5, "GPU": 1},
                       {"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}]
    assert where == {"rollout": [0, 1], "teacher": [2], "learner": [3, 4]}


def test_cpu_bundles_have_no_gpu_key():
    bundles, _ = plan_bundles(_cfg())
    assert all("GPU" not in b for b in bundles) and len(bundles) == 4  # 2 engines, teacher, 1 learner rank


def test_colocated_learner_ranks_share_the_engine_bundles():
    bundles, where = plan_bundles(_cfg(**{"placement.colocate": True, "rollout.num_gpus": 1, "learner.num_gpus": 1,
                                          "learner.num_ranks": 2, "learner.num_cpus": 1}))
    assert where["learner"] == where["rollout"] == [0, 1] and len(bundles) == 3
    assert bundles[0] == {"CPU": 1.5, "GPU": 1}
    with pytest.raises(ValueError, match="set learner.num_ranks .1. equal to rollout.num_workers .2."):
        plan_bundles(_cfg(**{"placement.colocate": True}))


def _train(out, *overrides):
    r = subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={out}", "logger=none", "steps=3",
                        "eval_every=0", "prompts_per_step=8", "task.eval_n_per_rule=4",
                        # fp32 on every machine: the test checks that data parallelism keeps the math exact,
                        # and bf16 autocast (model.dtype=auto on AMX/avx512_bf16 CPUs) rounds per shard size
                        "model.dtype=float32", "learner.precision=fp32", *overrides],
                       capture_output=True, text=True, timeout=600)
    return r, ([json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
               if (out / "metrics.jsonl").exists() else [])


@pytest.fixture(scope="module")
def one_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-rank")
    r, rows = _train(out)
    assert r.returncode == 0, r.stderr[-4000:]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("colocate", [False, True])
def test_two_zero2_learner_ranks_train_like_one(tmp_path, one_rank_run, colocate):
    """Data parallelism must not change the math: with the same rollouts (per-step seeds), 2 ZeRO-2
    ranks over gloo take the same steps as 1 rank, so every step's loss agrees. Colocated, the two
    ranks share the engines' placement bundles."""
    r2, two = _train(tmp_path, "learner.num_ranks=2", "learner.zero_stage=2", "learner.threads=1",
                     "learner.num_cpus=0.25", "save_every=3", f"placement.colocate={colocate}")
    assert r2.returncode == 0, r2.stderr[-4000:]
    pids = json.loads((tmp_path / "actors.json").read_text())
    assert set(pids) == {"rollout_0", "rollout_1", "teacher", "learner_0", "learner_1"}
    assert len(set(pids.values())) == 5  # five separate processes
    for a, b in zip(one_rank_run[1:], two[1:]):
        assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-4, abs=1e-6), (a["step"], a, b)
        assert b["learner/tokens"] == a["learner/tokens"]
    ckpt = tmp_path / "checkpoints" / "step_3"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "deepspeed" / "state").is_dir()


@pytest.mark.slow
def test_a_run_larger_than_the_cluster_is_refused_at_once(tmp_path):
    r, _ = _train(tmp_path, "learner.num_ranks=8")
    assert r.returncode != 0 and "more than the whole cluster" in r.stderr and "learner.num_ranks" in r.stderr
