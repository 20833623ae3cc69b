"""Weight sync: after a learner step and a push, the vLLM engine's log-probs equal the learner's."""
import pytest
import torch
from omegaconf import OmegaConf

from opcd.config import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _engine_logprobs(ray, worker, seqs, resp_lens):
    """Sampled-token log-probs of fixed sequences, as the engine computes them (prompt log-probs)."""
    return ray.get(worker.score_prompts.remote(seqs, resp_lens))


@pytest.mark.parametrize("method,zero_stage", [("object_store", 0), ("broadcast", 0), ("object_store", 3)])
def test_push_weights_makes_engine_match_learner(ray_local, tiny_model_dir, method, zero_stage, request):
    """ZeRO-3 shards the weights: the push must gather them (and not send freed buffers)."""
    ray = ray_local
    from opcd.actors import start_actors, stop_actors
    from opcd.batch import build_learn_batch
    from opcd.chat import encode_prompt
    from opcd.modeling import load_causal_lm, load_tokenizer, response_logits
    from opcd.engine import Sample
    from opcd.sync import WeightSync

    cfg = OmegaConf.structured(TrainConfig())
    cfg.model.path = tiny_model_dir
    cfg.model.dtype = "float32"  # compared with an fp32 reference to 1e-4 (auto may pick bf16 here)
    cfg.rollout.num_workers = 2 if method == "broadcast" else 1
    cfg.rollout.num_cpus = cfg.teacher.num_cpus = cfg.learner.num_cpus = 0.25
    cfg.learner.zero_stage = zero_stage
    cfg.sync.method, cfg.sync.bucket_mb = method, 0.05  # small buckets: the tiny model travels in several
    cfg.algo.lr = 0.05  # a big step so that the weights visibly change
    cfg.algo.loss = "nll"
    actors = start_actors(cfg, tiny_model_dir, batch_size=4)
    request.addfinalizer(lambda: stop_actors(actors))  # free the CPUs for the next case
    tok = load_tokenizer(tiny_model_dir)
    prompts = [encode_prompt(tok, p) for p in ["abc", "hello", "xyz", "qq"]]
    resp = [tok.encode(a, add_special_tokens=False) for a in ["cba", "olleh", "zyx", "qq"]]
    seqs = [p + r for p, r in zip(prompts, resp)]
    lens = [len(r) for r in resp]

    before = _engine_logprobs(ray, actors.workers[0], seqs, lens)
    samples = [Sample(prompt_ids=p, response_ids=r, logprobs=[0.0] * len(r)) for p, r in zip(prompts, resp)]
    scores = ray.get(actors.teacher.score.remote(seqs, lens, "topk", 4, 1.0))
    stats = ray.get(actors.learners[0].train_step.remote(build_learn_batch(samples, prompts, prompts, scores)))
    assert stats["nonfinite"] == 0.0
    sync = WeightSync(cfg.sync, "cpu", actors.learners, actors.workers)
    first = sync.push()
    assert first["sync/seconds"] > 0
    if method == "broadcast":
        assert first["sync/buckets"] > 2
        assert sync.push()["sync/seconds"] > 0  # the group is reused by later pushes
    after = _engine_logprobs(ray, actors.workers[-1], seqs, lens)

    # Reference: the learner's weights in a plain HF model.
    model = load_causal_lm(tiny_model_dir)
    model.load_state_dict(dict(ray.get(actors.learners[0].named_weights.remote())), strict=False)
    model.tie_weights()
    logits, mask = response_logits(model.eval(), seqs, lens, tok.pad_token_id)
    lp = torch.log_softmax(logits, -1)
    for b in range(len(seqs)):
        ref = [lp[b, t, resp[b][t]].item() for t in range(lens[b])]
        assert max(abs(x - y) for x, y in zip(ref, after[b])) < 1e-4
        # and the update really changed what the engine computes
    assert max(abs(x - y) for b in range(len(seqs)) for x, y in zip(before[b], after[b])) > 1e-2
