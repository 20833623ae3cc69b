"""DeepSpeed JSON config derivation (opcd.learner.actor.deepspeed_config); pure, no DeepSpeed import."""
import pytest
from omegaconf import OmegaConf

from opcd.config import AlgoConfig, LearnerConfig
from opcd.learner.actor import deepspeed_config


def _cfg(**kw):
    learner_kw = {k: v for k, v in kw.items() if k in LearnerConfig.__dataclass_fields__}
    algo_kw = {k: v for k, v in kw.items() if k in AlgoConfig.__dataclass_fields__}
    return OmegaConf.structured(LearnerConfig(**learner_kw)), OmegaConf.structured(AlgoConfig(**algo_kw))


def _ds(batch_size, world_size, **kw):
    learner, algo = _cfg(**kw)
    return deepspeed_config(learner, algo, batch_size, world_size)


@pytest.mark.parametrize("batch,world,micro,mbs,gas", [
    (64, 1, 16, 16, 4),
    (64, 2, 16, 16, 2),
    (64, 4, 16, 16, 1),
    (64, 1, 64, 64, 1),
    (64, 1, 128, 64, 1),  # micro-batch capped at the per-rank batch
    (10, 1, 4, 4, 3),  # ceil: the last micro-batch is short
    (6, 4, 8, 2, 1),  # per rank ceil(6/4) = 2
])
def test_gradient_accumulation_consumes_one_batch(batch, world, micro, mbs, gas):
    cfg = _ds(batch, world, micro_batch_size=micro)
    assert cfg["train_micro_batch_size_per_gpu"] == mbs
    assert cfg["gradient_accumulation_steps"] == gas
    assert cfg["train_batch_size"] == mbs * gas * world
    # One optimizer step sees the whole batch and not more than one extra micro-batch per rank.
    assert batch <= cfg["train_batch_size"] < batch + mbs * world


def test_explicit_grad_accum_steps_honoured():
    cfg = _ds(64, 1, micro_batch_size=16, grad_accum_steps=8)
    assert cfg["gradient_accumulation_steps"] == 8
    assert cfg["train_batch_size"] == 16 * 8
    cfg = _ds(64, 2, micro_batch_size=16, grad_accum_steps=1)
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["train_batch_size"] == 32


@pytest.mark.parametrize("stage,offload,expect", [(0, True, False), (1, True, True), (2, True, True),
                                                  (3, True, True), (2, False, False), (0, False, False)])
def test_offload_only_with_zero(stage, offload, expect):
    zero = _ds(64, 1, zero_stage=stage, offload=offload)["zero_optimization"]
    assert zero["stage"] == stage
    if expect:
        assert zero["offload_optimizer"] == {"device": "cpu"}
    else:
        assert "offload_optimizer" not in zero


@pytest.mark.parametrize("precision,enabled", [("bf16", True), ("fp32", False)])
def test_bf16_flag(precision, enabled):
    assert _ds(64, 1, precision=precision)["bf16"] == {"enabled": enabled}


def test_optimizer_and_clipping():
    cfg = _ds(64, 1, lr=3e-4, weight_decay=0.01, grad_clip=0.5)
    opt = cfg["optimizer"]
    assert opt["type"] == "AdamW"
    assert opt["params"]["torch_adam"] is True
    assert opt["params"]["lr"] == pytest.approx(3e-4) and opt["params"]["weight_decay"] == pytest.approx(0.01)
    assert opt["params"]["betas"] == [0.9, 0.999] and opt["params"]["eps"] == 1e-8
    assert cfg["gradient_clipping"] == pytest.approx(0.5)
    assert "scheduler" not in cfg  # the actor sets the lr itself
    assert "fp16" not in cfg


def test_config_is_json_serialisable():
    import json

    cfg = _ds(64, 2, zero_stage=2, offload=True, precision="bf16")
    assert json.loads(json.dumps(cfg)) == cfg


def test_optimizer_type_and_betas_come_from_config():
    cfg = _ds(64, 1, optimizer="SGD")
    assert cfg["optimizer"]["type"] == "SGD" and "torch_adam" not in cfg["optimizer"]["params"]
    cfg = _ds(64, 1, betas=[0.8, 0.95])
    assert cfg["optimizer"]["params"]["betas"] == [0.8, 0.95]
