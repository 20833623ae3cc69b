"""learner.precision=auto with a bf16 model.dtype on CPU: the forward runs under bf16 autocast while the
weights, their gradients and AdamW stay fp32 (in-process DeepSpeed, gloo, world size 1)."""
import pytest
import torch
from omegaconf import OmegaConf

from opcd.config import AlgoConfig, LearnerConfig

pytestmark = pytest.mark.slow


def _batch(tok):
    from opcd.batch import build_learn_batch
    from opcd.chat import encode_prompt
    from opcd.engine import Sample

    prompts = [encode_prompt(tok, p) for p in ["abc", "hello", "xyz", "qq"]]
    resp = [tok.encode(a, add_special_tokens=False) + [tok.eos_token_id] for a in ["cba", "olleh", "zyx", "qq"]]
    samples = [Sample(prompt_ids=p, response_ids=r, logprobs=[0.0] * len(r)) for p, r in zip(prompts, resp)]
    T = max(map(len, resp))
    scores = {"support_ids": torch.zeros(4, T, 1, dtype=torch.long), "logprobs": torch.zeros(4, T, 1),
              "token_logprobs": torch.zeros(4, T)}
    return build_learn_batch(samples, prompts, prompts, scores)


def test_autocast_learner_trains_with_fp32_master_weights(tiny_model_dir):
    from opcd.learner.actor import LearnerActor
    from opcd.modeling import load_tokenizer
    from opcd.net import free_port

    lc = OmegaConf.structured(LearnerConfig(micro_batch_size=2, precision="auto"))
    algo = OmegaConf.structured(AlgoConfig(loss="nll", lr=0.05))
    # An explicit model.dtype=bfloat16 is kept whatever this machine's flags: on CPU that is autocast.
    learner = LearnerActor(tiny_model_dir, lc, algo, "bfloat16", batch_size=4, rank=0, world_size=1,
                           master_addr="127.0.0.1", master_port=free_port(), seed=0)
    assert learner.precision == "autocast" and learner.ds_config["bf16"]["enabled"] is False
    module = learner.engine.module
    ids = torch.tensor([[7, 8, 9, 10]])
    assert module(input_ids=ids).logits.dtype == torch.bfloat16  # the forward is autocast
    seen = []  # the decoder alone too (the full-vocabulary losses call it for hidden states)
    hook = module.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    module.model(input_ids=ids)
    hook.remove()
    assert seen == [torch.bfloat16]
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the forward into the losses
    assert module.get_output_embeddings()(torch.zeros(1, module.config.hidden_size)).dtype == torch.float32  # only it

    batch = _batch(load_tokenizer(tiny_model_dir))
    first = learner.train_step(batch)
    for _ in range(5):
        last = learner.train_step(batch)
    assert first["nonfinite"] == 0.0 and last["loss/nll"] < first["loss/nll"] - 0.5
    assert all(p.dtype == torch.float32 for p in module.parameters())  # master weights
    states = [s for s in learner.engine.optimizer.state.values() if "exp_avg" in s]
    assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)  # AdamW moments
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for _, v in learner.named_weights())
