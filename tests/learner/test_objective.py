"""The learner objective (opcd.learner.objective.student_loss) against opcd.losses on manual logits."""

import pytest
import torch
from omegaconf import OmegaConf

from opcd import losses
from opcd.engine import Sample
from opcd.batch import LearnBatch, build_learn_batch, pad_2d, pad_3d
from opcd.chat import encode_answer, encode_prompt
from opcd.config import AlgoConfig
from opcd.learner.objective import TEACHER_SUPPORT, student_loss
from opcd.modeling import load_causal_lm, response_logits
from opcd.models.toy.pretrain import build_model
from opcd.teacher.scoring import score_responses

K = 4


@pytest.fixture(scope="module")
def student(tiny_model_dir):
    torch.set_num_threads(1)
    return load_causal_lm(tiny_model_dir)


@pytest.fixture(scope="module")
def teacher(tok):
    torch.manual_seed(1)  # a different random model than the student: the KLs are clearly nonzero
    return build_model(tok, hidden=32, layers=1, heads=2).eval()


@pytest.fixture(scope="module")
def views(tok):
    recs = [("abc", "Reverse the string.", "cba"), ("hello", "Reverse the string.", "ol"),
            ("xy", "Examples:\nab -> ba", "yxyxy")]
    student_prompts = [encode_prompt(tok, p) for p, _, _ in recs]
    context_prompts = [encode_prompt(tok, p, c) for p, c, _ in recs]
    resps = [encode_answer(tok, a) for _, _, a in recs]
    return student_prompts, context_prompts, resps


def _algo(**kw):
    return OmegaConf.structured(AlgoConfig(**kw))


def _make_batch(student, teacher, tok, views, support, temperature=1.0):
    """The real pipeline: student scores its own samples (behaviour log-probs and top-k), the teacher
    scores the with-context sequences on the requested support, build_learn_batch joins them."""
    sp, cp, resps = views
    lens = [len(r) for r in resps]
    pad = tok.pad_token_id
    own = score_responses(student, [p + r for p, r in zip(sp, resps)], lens, pad, support="topk", k=K,
                          temperature=temperature)
    samples = [Sample(p, r, own["token_logprobs"][i, :len(r)].tolist()) for i, (p, r) in enumerate(zip(sp, resps))]
    sup = own["support_ids"] if support == "student_topk" else support
    scores = score_responses(teacher, [p + r for p, r in zip(cp, resps)], lens, pad, support=sup, k=K,
                             temperature=temperature)
    return build_learn_batch(samples, sp, cp, scores)


def _student_logits(student, mb, pad_id):
    logits, mask = response_logits(student, mb.student_seqs, mb.resp_lens, pad_id)
    return logits, mask & mb.mask


# ---------------------------------------------------------------------------------------------
# build_learn_batch / LearnBatch.slice
# ---------------------------------------------------------------------------------------------
def test_build_learn_batch_fields(student, teacher, tok, views):
    sp, cp, resps = views
    mb = _make_batch(student, teacher, tok, views, "student_topk")
    lens = [len(r) for r in resps]
    T = max(lens)
    assert len(mb) == 3 and mb.resp_lens == lens
    assert mb.student_seqs == [p + r for p, r in zip(sp, resps)]
    assert mb.context_seqs == [p + r for p, r in zip(cp, resps)]
    assert mb.response_ids.tolist() == [r + [0] * (T - len(r)) for r in resps]
    assert mb.mask.dtype == torch.bool and mb.mask.tolist() == [[t < n for t in range(T)] for n in lens]
    assert mb.support_ids.shape == mb.teacher_logprobs.shape == (3, T, K)
    assert mb.behaviour_logprobs.shape == mb.teacher_token_logprobs.shape == (3, T)
    assert (mb.behaviour_logprobs[~mb.mask] == 0).all()


def _hand_batch():
    lens = [2, 5, 3]
    B, T = 3, 5
    g = torch.Generator().manual_seed(0)
    ids = [[int(x) for x in torch.randint(6, 20, (n,), generator=g)] for n in lens]
    return LearnBatch(
        student_seqs=[[1, 2] + r for r in ids], context_seqs=[[1, 3, 3, 2] + r for r in ids], resp_lens=lens,
        response_ids=pad_2d(ids, T, 0, torch.long), mask=pad_2d([[1] * n for n in lens], T, 0, torch.bool),
        support_ids=torch.randint(0, 20, (B, T, K), generator=g), teacher_logprobs=-torch.rand(B, T, K, generator=g),
        behaviour_logprobs=-torch.rand(B, T, generator=g), teacher_token_logprobs=-torch.rand(B, T, generator=g))


def test_learn_batch_slice_trims_to_longest_response():
    full = _hand_batch()
    for (i, j), T in {(0, 1): 2, (0, 2): 5, (2, 3): 3, (0, 3): 5, (1, 3): 5}.items():
        mb = full.slice(i, j)
        assert len(mb) == j - i and mb.resp_lens == full.resp_lens[i:j]
        assert mb.student_seqs == full.student_seqs[i:j] and mb.context_seqs == full.context_seqs[i:j]
        for name in ("response_ids", "mask", "support_ids", "teacher_logprobs", "behaviour_logprobs",
                     "teacher_token_logprobs"):
            got, ref = getattr(mb, name), getattr(full, name)
            assert got.shape[:2] == (j - i, T), name
            assert torch.equal(got, ref[i:j, :T]), name


def test_learn_batch_empty_slice():
    full = _hand_batch()
    mb = full.slice(3, 3)
    assert len(mb) == 0


def test_pad_helpers():
    assert pad_2d([[1.0], [2.0, 3.0]], 3, -1.0, torch.float32).tolist() == [[1, -1, -1], [2, 3, -1]]
    import numpy as np

    rows = [np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]]), np.zeros((0, 0)), [[6.0, 7.0], [8.0, 9.0], [1.0, 1.0]]]
    out = pad_3d(rows, 2, 2, 0.0, torch.float32)  # fewer positions, fewer top-k columns, empty, too long
    assert out.tolist() == [[[1, 2], [0, 0]], [[3, 0], [4, 0]], [[0, 0], [0, 0]], [[6, 7], [8, 9]]]
    assert pad_3d([np.array([[5, 6]])], 1, 2, 0, torch.long).dtype == torch.long


# ---------------------------------------------------------------------------------------------
# student_loss values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature,renorm,agg", [(1.0, False, "token_mean"), (0.7, True, "seq_mean")])
def test_topk_reverse_kl_matches_losses(student, teacher, tok, views, temperature, renorm, agg):
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT["topk_reverse_kl"], temperature)
    algo = _algo(loss="topk_reverse_kl", temperature=temperature, renormalize_topk=renorm, aggregation=agg)
    loss, m = student_loss(student, mb, algo, tok.pad_token_id)
    with torch.no_grad():
        logits, mask = _student_logits(student, mb, tok.pad_token_id)
        ref, _ = losses.topk_reverse_kl(logits, mb.support_ids, mb.teacher_logprobs, mask, temperature=temperature,
                                        renormalize=renorm, aggregation=agg)
    assert loss.dim() == 0 and loss.requires_grad
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-6)
    assert abs(ref.item()) > 1e-3
    assert set(m) == {"loss/kl", "loss/total"}
    assert m["loss/total"] == pytest.approx(loss.item()) and m["loss/kl"] == pytest.approx(loss.item())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_reverse_kl_chunked_path_matches_full(student, teacher, tok, views, temperature):
    mb = _make_batch(student, teacher, tok, views, "full", temperature)
    assert mb.teacher_logprobs.shape[-1] == len(tok)
    algo = _algo(loss="full_reverse_kl", temperature=temperature)
    loss, m = student_loss(student, mb, algo, tok.pad_token_id)
    with torch.no_grad():
        logits, mask = _student_logits(student, mb, tok.pad_token_id)
        t_logits, _ = response_logits(teacher, mb.context_seqs, mb.resp_lens, tok.pad_token_id)
        ref, _ = losses.full_reverse_kl(logits, t_logits, mask, temperature=temperature)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-5, rtol=1e-5)
    assert ref.item() > 1e-3  # a true KL between two different models
    assert m["loss/kl"] == pytest.approx(loss.item())


def test_other_losses_match_losses(student, teacher, tok, views):
    pad = tok.pad_token_id
    # forward_kl on the teacher's top-k
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT["forward_kl"])
    with torch.no_grad():
        logits, mask = _student_logits(student, mb, pad)
    loss, _ = student_loss(student, mb, _algo(loss="forward_kl", renormalize_topk=True), pad)
    ref, _ = losses.forward_kl(logits, mb.support_ids, mb.teacher_logprobs, mask, renormalize=True)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-6)
    # nll on the response tokens
    loss, m = student_loss(student, mb, _algo(loss="nll"), pad)
    ref, _ = losses.nll(logits, mb.response_ids, mask)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-6)
    assert "loss/nll" in m
    # sampled reverse KL: on-policy behaviour log-probs are the student's own
    loss, m = student_loss(student, mb, _algo(loss="sampled_reverse_kl"), pad)
    s_lp = torch.log_softmax(logits, -1).gather(-1, mb.response_ids[..., None])[..., 0]
    torch.testing.assert_close(s_lp[mask], mb.behaviour_logprobs[mask], atol=1e-5, rtol=1e-5)
    ref, _ = losses.sampled_reverse_kl(s_lp, mb.behaviour_logprobs, mb.teacher_token_logprobs, mask)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-6)
    # jsd over the full vocabulary at temperature T
    T = 0.7
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT["jsd"], T)
    with torch.no_grad():
        logits, mask = _student_logits(student, mb, pad)
        t_logits, _ = response_logits(teacher, mb.context_seqs, mb.resp_lens, pad)
    loss, m = student_loss(student, mb, _algo(loss="jsd", jsd_beta=0.3, temperature=T), pad)
    ref, _ = losses.generalized_jsd(logits / T, t_logits / T, mask, beta=0.3)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-5, rtol=1e-5)
    assert "loss/jsd" in m


@pytest.mark.parametrize("name", ["topk_reverse_kl", "full_reverse_kl"])
def test_nca_adds_beta_times_consistency(student, teacher, tok, views, name):
    pad = tok.pad_token_id
    T, beta = 0.8, 0.5
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT[name], T)
    main, m0 = student_loss(student, mb, _algo(loss=name, temperature=T), pad)
    total, m = student_loss(student, mb, _algo(loss=name, temperature=T, nca_beta=beta), pad)
    with torch.no_grad():
        logits, mask = _student_logits(student, mb, pad)
        ctx, _ = response_logits(student, mb.context_seqs, mb.resp_lens, pad)
        reg, _ = losses.consistency_regularizer(logits, ctx, mask, temperature=T)
    assert reg.item() > 1e-4
    assert "loss/consistency" not in m0
    assert m["loss/consistency"] == pytest.approx(reg.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(total.detach(), main.detach() + beta * reg, atol=1e-5, rtol=1e-5)
    assert m["loss/total"] == pytest.approx(total.item(), rel=1e-6)
    assert m["loss/kl"] == pytest.approx(main.item(), rel=1e-5)


def test_nca_weight_ramps_linearly_then_holds():
    from opcd.learner.objective import nca_weight

    assert [nca_weight(0.5, 4, s) for s in (1, 2, 4, 10)] == [0.125, 0.25, 0.5, 0.5]
    assert nca_weight(0.5, 0, 1) == 0.5 and nca_weight(0.0, 4, 10) == 0.0


def test_nca_warmup_scales_the_regulariser_in_the_loss(student, teacher, tok, views):
    pad = tok.pad_token_id
    mb = _make_batch(student, teacher, tok, views, "student_topk")
    main, _ = student_loss(student, mb, _algo(), pad)
    full, m_full = student_loss(student, mb, _algo(nca_beta=0.5), pad, step=3)
    ramp, m = student_loss(student, mb, _algo(nca_beta=0.5, nca_warmup_steps=4), pad, step=1)
    reg = m_full["loss/consistency"]
    assert m["loss/nca_beta"] == 0.125 and m_full["loss/nca_beta"] == 0.5
    torch.testing.assert_close(ramp.detach(), main.detach() + 0.125 * reg, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.detach(), main.detach() + 0.5 * reg, atol=1e-5, rtol=1e-5)


def test_unknown_loss_raises(student, teacher, tok, views):
    mb = _make_batch(student, teacher, tok, views, "topk")
    with pytest.raises(ValueError) as e:
        student_loss(student, mb, _algo(loss="kl"), tok.pad_token_id)
    msg = str(e.value)
    assert "unknown algo.loss 'kl'" in msg and all(k in msg for k in TEACHER_SUPPORT)


@pytest.mark.parametrize("name,nca", [("topk_reverse_kl", 0.0), ("topk_reverse_kl", 0.5), ("full_reverse_kl", 0.0),
                                      ("forward_kl", 0.0), ("jsd", 0.0), ("sampled_reverse_kl", 0.0), ("nll", 0.0)])
def test_gradients_finite_and_nonzero(student, teacher, tok, views, name, nca):
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT[name])
    student.zero_grad(set_to_none=True)
    loss, _ = student_loss(student, mb, _algo(loss=name, nca_beta=nca), tok.pad_token_id)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    total = sum(g.abs().sum().item() for g in grads)
    assert total > 0
    # the tied embedding / LM head always gets a gradient
    assert student.get_output_embeddings().weight.grad.abs().sum() > 0
    student.zero_grad(set_to_none=True)


def test_full_reverse_kl_gradients_match_unchunked(student, teacher, tok, views):
    """The chunked path's gradients equal those of full_reverse_kl on materialised logits."""
    pad = tok.pad_token_id
    mb = _make_batch(student, teacher, tok, views, "full")
    params = [p for p in student.parameters()]
    loss, _ = student_loss(student, mb, _algo(loss="full_reverse_kl"), pad)
    g1 = torch.autograd.grad(loss, params, allow_unused=True)
    logits, mask = _student_logits(student, mb, pad)
    with torch.no_grad():
        t_logits, _ = response_logits(teacher, mb.context_seqs, mb.resp_lens, pad)
    ref, _ = losses.full_reverse_kl(logits, t_logits, mask)
    g2 = torch.autograd.grad(ref, params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean"])
def test_sharded_weighted_gradient_equals_whole_batch_gradient(student, teacher, tok, views, aggregation):
    """What DeepSpeed computes with 2 ranks x 2 accumulation steps (mean over the 4 weighted micro-batch
    gradients) equals the gradient of the loss over the whole batch: sharding does not reweight tokens."""
    from opcd.learner.objective import micro_batch_weight

    algo = _algo(loss="topk_reverse_kl", top_k=K, aggregation=aggregation)
    batch = _make_batch(student, teacher, tok, views, "student_topk")
    pad = tok.pad_token_id

    def grad(loss):
        student.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in student.parameters()])

    full = grad(student_loss(student, batch, algo, pad)[0])
    world, gas = 2, 2
    shards = [batch.slice(0, 1), batch.slice(1, 2), batch.slice(2, 3)]  # 3 sequences over 4 slots: one empty
    total = torch.zeros_like(full)
    for mb in shards:
        w = micro_batch_weight(mb, batch, aggregation, world, gas)
        total += grad(student_loss(student, mb, algo, pad)[0] * w) / (world * gas)
    torch.testing.assert_close(total, full, rtol=1e-5, atol=1e-7)


def test_merge_rank_stats():
    from opcd.learner.actor import merge_rank_stats

    a = {"loss/total": 0.25, "learner/tokens": 10.0, "learner/seconds": 1.0, "nonfinite": 0.0, "learner/lr": 1e-3}
    b = {"loss/total": 0.5, "learner/tokens": 30.0, "learner/seconds": 2.0, "nonfinite": 1.0, "learner/lr": 1e-3}
    assert merge_rank_stats([a, b]) == {"loss/total": 0.75, "learner/tokens": 40.0, "learner/seconds": 2.0,
                                        "nonfinite": 1.0, "learner/lr": 1e-3}


@pytest.mark.parametrize("name", ["topk_reverse_kl", "full_reverse_kl", "forward_kl", "sampled_reverse_kl", "nll"])
def test_environment_turns_are_no_learning_target(student, teacher, tok, views, name):
    """Multi-turn episodes mark the environment's tokens 0 in ``LearnBatch.mask``: whatever the teacher
    says there, the loss and its gradient must not change (and the masked loss differs from the unmasked)."""
    pad = tok.pad_token_id
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT[name])
    env = torch.zeros_like(mb.mask)
    env[:, 1:3] = True  # positions 1-2 of every response are "the environment's turn"
    mb.mask = mb.mask & ~env
    base, _ = student_loss(student, mb, _algo(loss=name), pad)
    garbage = mb.teacher_logprobs.clone()
    garbage[env] = -20.0 * torch.rand_like(garbage[env]) - 1.0
    tok_garbage = mb.teacher_token_logprobs.clone()
    tok_garbage[env] = -30.0
    resp = mb.response_ids.clone()
    resp[env] = 5
    from dataclasses import replace

    other = replace(mb, teacher_logprobs=garbage, teacher_token_logprobs=tok_garbage, response_ids=resp)
    with_garbage, _ = student_loss(student, other, _algo(loss=name), pad)
    torch.testing.assert_close(with_garbage, base, atol=1e-6, rtol=1e-6)
    unmasked = replace(other, mask=mb.mask | (env & (resp != pad)))
    assert abs(student_loss(student, unmasked, _algo(loss=name), pad)[0].item() - base.item()) > 1e-4


def test_sampled_reverse_kl_applies_the_temperature(student, teacher, tok, views):
    """At T != 1 the student's token log-prob is log_softmax(logits / T)[y] (the teacher's scores already carry T)."""
    pad, T = tok.pad_token_id, 2.0
    mb = _make_batch(student, teacher, tok, views, TEACHER_SUPPORT["sampled_reverse_kl"], T)
    with torch.no_grad():
        logits, mask = _student_logits(student, mb, pad)
    loss, _ = student_loss(student, mb, _algo(loss="sampled_reverse_kl", temperature=T), pad)
    s_lp = torch.log_softmax(logits / T, -1).gather(-1, mb.response_ids[..., None])[..., 0]
    ref, _ = losses.sampled_reverse_kl(s_lp, mb.behaviour_logprobs, mb.teacher_token_logprobs, mask)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-6)
    at_one = torch.log_softmax(logits, -1).gather(-1, mb.response_ids[..., None])[..., 0]
    wrong, _ = losses.sampled_reverse_kl(at_one, mb.behaviour_logprobs, mb.teacher_token_logprobs, mask)
    assert abs(wrong.item() - ref.item()) > 1e-3  # the test can tell T from 1


def test_learn_batch_masks_the_environment_turns_of_episodes():
    """An episode's ``loss_mask`` (0 on the environment's turns) becomes the batch mask; plain samples learn everywhere."""
    from opcd.batch import response_mask

    ep = Sample([1], [5, 6, 7, 8, 9], loss_mask=[1, 1, 0, 0, 1])
    plain = Sample([1], [5, 6])
    scores = {"logprobs": torch.zeros(2, 5, K), "support_ids": torch.zeros(2, 5, K, dtype=torch.long),
              "token_logprobs": torch.zeros(2, 5)}
    b = build_learn_batch([ep, plain], [[1], [1]], [[2], [2]], scores)
    assert b.mask.tolist() == [[True, True, False, False, True], [True, True, False, False, False]]
    assert response_mask([ep], 6).tolist() == [[True, True, False, False, True, False]]
