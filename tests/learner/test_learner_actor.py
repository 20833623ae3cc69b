"""The DeepSpeed learner (in-process, gloo, world size 1): real steps, and NaN steps that change nothing."""
import pytest
import torch
from omegaconf import OmegaConf

from opcd.config import AlgoConfig, LearnerConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    from opcd.net import free_port
    from opcd.learner.actor import LearnerActor

    lc = OmegaConf.structured(LearnerConfig(micro_batch_size=2))
    algo = OmegaConf.structured(AlgoConfig(loss="nll", lr=0.05))
    return LearnerActor(tiny_model_dir, lc, algo, "float32", batch_size=4, rank=0, world_size=1,
                        master_addr="127.0.0.1", master_port=free_port(), seed=0)


def _batch(tok, teacher_fill: float):
    from opcd.batch import build_learn_batch
    from opcd.chat import encode_prompt
    from opcd.engine import Sample

    prompts = [encode_prompt(tok, p) for p in ["abc", "hello", "xyz", "qq"]]
    resp = [tok.encode(a, add_special_tokens=False) + [tok.eos_token_id] for a in ["cba", "olleh", "zyx", "qq"]]
    samples = [Sample(prompt_ids=p, response_ids=r, logprobs=[0.0] * len(r)) for p, r in zip(prompts, resp)]
    T = max(map(len, resp))
    scores = {"support_ids": torch.zeros(4, T, 1, dtype=torch.long),
              "logprobs": torch.full((4, T, 1), teacher_fill), "token_logprobs": torch.zeros(4, T)}
    return build_learn_batch(samples, prompts, prompts, scores)


def _weights(learner):
    return {k: v.clone() for k, v in learner.named_weights()}


def test_nonfinite_loss_skips_the_update(learner, tiny_model_dir):
    from opcd.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    learner.algo.loss = "sampled_reverse_kl"  # uses the teacher log-probs: NaN in, NaN loss out
    bad = _batch(tok, 0.0)
    bad.teacher_token_logprobs[:] = float("nan")
    before = _weights(learner)
    stats = learner.train_step(bad)
    assert stats["nonfinite"] == 1.0
    after = _weights(learner)
    assert all(torch.equal(before[k], after[k]) for k in before), "a NaN step must not change any weight"
    assert all(torch.isfinite(v).all() for v in after.values())


def test_finite_step_lowers_the_loss(learner, tiny_model_dir):
    from opcd.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    learner.algo.loss = "nll"
    batch = _batch(tok, 0.0)
    first = learner.train_step(batch)
    for _ in range(5):
        last = learner.train_step(batch)
    assert first["nonfinite"] == 0.0 and last["loss/nll"] < first["loss/nll"] - 0.5
    assert learner.ds_config["gradient_accumulation_steps"] == 2  # 4 sequences, micro-batch 2


def test_gradient_checkpointing_gives_the_same_step(learner, tiny_model_dir):
    """Recomputing activations in the backward pass trades time for memory, never the math."""
    from opcd.net import free_port
    from opcd.learner.actor import LearnerActor
    from opcd.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    lc = OmegaConf.structured(LearnerConfig(micro_batch_size=2, gradient_checkpointing=True))
    algo = OmegaConf.structured(AlgoConfig(loss="nll", lr=0.05))
    ckpt = LearnerActor(tiny_model_dir, lc, algo, "float32", batch_size=4, rank=0, world_size=1,
                        master_addr="127.0.0.1", master_port=free_port(), seed=0)
    plain = OmegaConf.structured(LearnerConfig(micro_batch_size=2))
    ref = LearnerActor(tiny_model_dir, plain, algo, "float32", batch_size=4, rank=0, world_size=1,
                       master_addr="127.0.0.1", master_port=free_port(), seed=0)
    batch = _batch(tok, 0.0)
    assert ckpt.engine.module.is_gradient_checkpointing
    for _ in range(2):
        a, b = ckpt.train_step(batch), ref.train_step(batch)
        assert a["loss/nll"] == pytest.approx(b["loss/nll"], rel=1e-5)
