"""The step's data path, phase by phase, against a fake cluster that records what each actor was given.

No Ray, no engine: the fake answers every prompt with a response that names the prompt it was given
(and the sample number), and the teacher's scores name the sequence they scored. Each test checks
one rule of context distillation, so that a swapped prompt, a dropped context or a mispaired sample
fails here, in seconds, rather than in a slow accuracy run.
"""
import random

import pytest
import torch

from opcd import phases, routing
from opcd.algorithms import algo_spec
from opcd.config import AlgoConfig
from opcd.engine import Sample
from opcd.loop_state import LoopState
from opcd.tasks import TaskData

K = 3
CONTEXT = "Reverse the string."


class FakeCluster:
    """Answers prompt p with [p-number, sample-number, EOS-free filler], top-k ids derived from them."""

    def __init__(self):
        self.generated: list[dict] = []  # one entry per generate call
        self.scored: list[list[int]] = []  # the sequences given to the teacher
        self.trained = []
        self.failures = 0
        self.prompt_ids: dict[tuple, int] = {}  # prompt -> number, in order of first appearance

    def number(self, prompt) -> int:
        return self.prompt_ids.setdefault(tuple(prompt), len(self.prompt_ids) + 10)

    def generate(self, prompts, sampling, seed, *, teacher):
        self.generated.append({"prompts": [list(p) for p in prompts], "teacher": teacher, "seed": seed,
                               "sampling": dict(sampling)})
        out = []
        for p in prompts:
            for s in range(sampling.get("n", 1)):
                resp = [self.number(p), 60 + s, 61, 62][: 2 + (self.number(p) % 3)]
                out.append(Sample(list(p), resp, [-0.5] * len(resp),
                                  [[t, t + 1, t + 2] for t in resp], [[-0.1, -2.0, -3.0] for _ in resp]))
        return out

    def score(self, seqs, resp_lens, support, k, temperature):
        self.scored = [list(s) for s in seqs]
        B, T = len(seqs), max(resp_lens)
        lp = torch.zeros(B, T, k)
        for b in range(B):  # row b's teacher log-probs say which sequence they came from
            lp[b, :resp_lens[b]] = -float(b + 1)
        sup = support if isinstance(support, torch.Tensor) else torch.zeros(B, T, k, dtype=torch.long)
        return {"support_ids": sup, "logprobs": lp, "token_logprobs": lp[..., 0].clone(),
                "seconds": 0.01, "temperature": temperature}

    def train(self, batch):
        self.trained.append(batch)
        return {"nonfinite": 0.0, "learner/seconds": 1.0, "learner/tokens": float(sum(batch.resp_lens))}

    def push_weights(self):
        return {"sync/seconds": 0.0}


def _records(n: int = 4, retain: tuple = ()):
    recs = [{"prompt": f"ab{'c' * i}", "context": CONTEXT, "answer": "x", "metadata": {"rule": "reverse"}}
            for i in range(n)]
    for i in retain:
        recs[i]["metadata"]["retain"] = True
    return recs


def _prep(tok, records, algo="opcd", n=1, **algo_kw):
    kw = {"opcd": {}, "offpolicy_cd": dict(sampler="teacher", loss="forward_kl"),
          "gkd": dict(sampler="mix", loss="jsd", gkd_lambda=0.5)}[algo]
    spec = algo_spec(AlgoConfig(name=algo, top_k=K, **{**kw, **algo_kw}))
    views = routing.prompt_views(records, lambda r, c: phases.render(tok, [r], c)[0], 256)
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "n": n, "top_k_logprobs": spec.rollout_logprobs}
    return phases.Prepared(tok, "teacher", TaskData(records, [], lambda t, r: False), records, views, spec,
                           sampling, 1.0, 256)


def _step(tok, records, algo="opcd", n=1, on_policy=None):
    cluster, prep = FakeCluster(), _prep(tok, records, algo, n)
    state = LoopState.fresh(0)
    plan = phases.choose_prompts(state, prep, 1, prompts_per_step=3, rollout_seed=0)
    if on_policy is not None:
        plan.on_policy = on_policy
    scored = phases.make_batch(cluster, prep, plan)
    return cluster, prep, plan, scored


def _has_context(tok, ids) -> bool:
    return CONTEXT in tok.decode(ids)


def test_the_student_answers_without_the_context(tok):
    cluster, prep, plan, _ = _step(tok, _records())
    call = cluster.generated[0]
    assert call["teacher"] is False and len(call["prompts"]) == 3
    for i, p in zip(plan.idx, call["prompts"]):
        assert not _has_context(tok, p) and p == phases.render(tok, [prep.records[i]], False)[0]


def test_retain_records_keep_their_context_on_the_student_side(tok):
    recs = _records(retain=(0, 1, 2, 3))
    cluster, _, _, scored = _step(tok, recs)
    assert all(_has_context(tok, p) for p in cluster.generated[0]["prompts"])
    assert all(_has_context(tok, s) for s in scored.batch.student_seqs)


def test_off_policy_the_teacher_answers_with_the_context(tok):
    cluster, _, plan, scored = _step(tok, _records(), algo="offpolicy_cd")
    assert plan.on_policy is False
    call = cluster.generated[0]
    assert call["teacher"] is True and all(_has_context(tok, p) for p in call["prompts"])
    # ...and the student still learns those responses without the context
    assert not any(_has_context(tok, s) for s in scored.batch.student_seqs)


@pytest.mark.parametrize("algo", ["opcd", "offpolicy_cd"])
def test_the_teacher_scores_with_the_context(tok, algo):
    cluster, prep, plan, scored = _step(tok, _records(), algo=algo)
    assert len(cluster.scored) == 3
    for j, (i, seq) in enumerate(zip(plan.idx, cluster.scored)):
        ctx = prep.views.context[i]
        assert seq[:len(ctx)] == ctx and _has_context(tok, seq)
        assert seq[len(ctx):] == scored.batch.response_ids[j, :scored.batch.resp_lens[j]].tolist()


def test_the_learner_gets_student_prompts_and_context_prompts_in_their_places(tok):
    _, prep, plan, scored = _step(tok, _records())
    b = scored.batch
    for j, i in enumerate(plan.idx):
        resp = b.response_ids[j, :b.resp_lens[j]].tolist()
        assert b.student_seqs[j] == prep.views.student[i] + resp
        assert b.context_seqs[j] == prep.views.context[i] + resp
        assert not _has_context(tok, b.student_seqs[j]) and _has_context(tok, b.context_seqs[j])


def test_with_several_samples_each_is_paired_with_its_own_prompt(tok):
    cluster, prep, plan, scored = _step(tok, _records(), n=2)
    b = scored.batch
    assert len(b) == 6 and cluster.generated[0]["sampling"]["n"] == 2
    for j in range(6):
        i = plan.idx[j // 2]  # prompt-major
        resp = b.response_ids[j, :b.resp_lens[j]].tolist()
        # the fake's response names the prompt it answered, and which sample it is
        assert resp[0] == cluster.number(prep.views.student[i]) and resp[1] == 60 + j % 2
        assert b.student_seqs[j] == prep.views.student[i] + resp
        assert cluster.scored[j] == prep.views.context[i] + resp
        assert torch.all(b.teacher_logprobs[j, :b.resp_lens[j]] == -float(j + 1))  # row j's own scores


def test_the_teacher_scores_the_students_own_top_k(tok):
    _, _, _, scored = _step(tok, _records())
    b = scored.batch
    for j in range(len(b)):
        resp = b.response_ids[j, :b.resp_lens[j]].tolist()
        assert b.support_ids[j, :len(resp)].tolist() == [[t, t + 1, t + 2] for t in resp]


def test_the_rollout_asks_the_engine_for_the_top_k_only_when_the_loss_needs_it(tok):
    assert _prep(tok, _records()).sampling["top_k_logprobs"] == K
    assert _prep(tok, _records(), "offpolicy_cd").sampling["top_k_logprobs"] == 1


def test_choose_prompts_is_epoch_wise_and_seeded(tok):
    prep = _prep(tok, _records(5))
    state = LoopState.fresh(0)
    plans = [phases.choose_prompts(state, prep, s, 2, rollout_seed=3) for s in (1, 2, 3)]
    assert sorted(plans[0].idx + plans[1].idx + plans[2].idx[:1]) == [0, 1, 2, 3, 4]
    assert [p.seed for p in plans] == [phases.step_seed(3, s) for s in (1, 2, 3)] and len({p.seed for p in plans}) == 3
    again = LoopState.fresh(0)
    assert [phases.choose_prompts(again, prep, s, 2, 3).idx for s in (1, 2, 3)] == [p.idx for p in plans]


def test_gkd_mixes_student_and_teacher_steps(tok):
    prep = _prep(tok, _records(), "gkd")
    state = LoopState.fresh(1)
    coins = [phases.choose_prompts(state, prep, s, 1, 0).on_policy for s in range(1, 201)]
    assert 60 < sum(coins) < 140


def test_prefetch_rewinds_the_checkpointed_order_and_rng(tok):
    from concurrent.futures import ThreadPoolExecutor

    cluster, prep = FakeCluster(), _prep(tok, _records(5))
    state = LoopState.fresh(0)
    phases.next_batch(cluster, prep, state, 1, 2, 0)
    before = state.to_checkpoint()
    with ThreadPoolExecutor(1) as pool:
        state.prefetch = phases.start_prefetch(pool, cluster, prep, state, 2, 2, 0)
        assert state.to_checkpoint() == before  # the prefetched draw is not saved: a resume redraws it
        scored = phases.next_batch(cluster, prep, state, 2, 2, 0)
    assert state.prefetch is None and scored.plan.step == 2
    resumed = LoopState.from_checkpoint(before)
    assert phases.choose_prompts(resumed, prep, 2, 2, 0).idx == scored.plan.idx


def test_learn_trains_on_the_scored_batch(tok):
    cluster, _, _, scored = _step(tok, _records())
    stats = phases.learn(cluster, scored)
    assert cluster.trained == [scored.batch] and stats["learner/tokens_per_s"] == sum(scored.batch.resp_lens)


def test_progress_postfix_shows_only_loss_and_the_distilled_accuracies():
    ev = {"eval/distilled/none": 0.5, "eval/distilled/system": 0.75, "eval/distilled/demos": 0.25, "eval/distilled/system_heldout": 0.1,
          "eval/distilled/harm_system": 0.2, "eval/other/system": 0.9, "eval/agreement_kl": 0.3}
    assert phases.progress_postfix({"loss/total": 1.25, "loss/kl": 1.0}, ev) == {
        "loss": "1.2500", "Acc_x": "0.50", "Acc_xc": "0.75"}
    assert phases.progress_postfix({}, {}) == {"loss": "nan"}


def test_step_seed_matches_the_seeds_of_earlier_runs():
    # the formula resumed runs (and committed results) depend on: step 1 -> 0-based index 0
    assert phases.step_seed(0, 1) == 0 and phases.step_seed(2, 3) == (2 * 100_003 + 2 * 101) % 2**31
    rng = random.Random(0)
    assert routing.student_answers(rng, 1.0) and not routing.student_answers(rng, 0.0)
