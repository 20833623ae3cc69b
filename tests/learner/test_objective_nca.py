"""The learner objective with the consistency regulariser's variants (algo.nca_*): values against
opcd.consistency on the model's own logits, which forward pass carries the gradient, the delay, and
the per-position metrics."""
import pytest
import torch
from omegaconf import OmegaConf

from opcd.batch import build_learn_batch
from opcd.chat import encode_answer, encode_prompt
from opcd.config import AlgoConfig
from opcd.consistency import consistency_term
from opcd.engine import Sample
from opcd.learner.objective import nca_weight, student_loss
from opcd.modeling import load_causal_lm, response_logits
from opcd.models.toy.pretrain import build_model
from opcd.teacher.scoring import score_responses

K = 4


@pytest.fixture(scope="module")
def setup(tok, tiny_model_dir):
    torch.set_num_threads(1)
    student = load_causal_lm(tiny_model_dir)
    with torch.no_grad():  # sharper random weights: the context changes the greedy token at some positions
        for p in student.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    torch.manual_seed(1)
    teacher = build_model(tok, hidden=32, layers=1, heads=2).eval()
    recs = [("abcdef", "Reverse the string.", "fedcba"), ("hello", "Reverse the string.", "olleh"),
            ("xy", "Examples:\nab -> ba", "yxyxy")]
    sp = [encode_prompt(tok, p) for p, _, _ in recs]
    cp = [encode_prompt(tok, p, c) for p, c, _ in recs]
    resps = [encode_answer(tok, a) for _, _, a in recs]
    lens = [len(r) for r in resps]
    own = score_responses(student, [p + r for p, r in zip(sp, resps)], lens, tok.pad_token_id, support="topk", k=K)
    samples = [Sample(p, r, own["token_logprobs"][i, :len(r)].tolist()) for i, (p, r) in enumerate(zip(sp, resps))]
    scores = score_responses(teacher, [p + r for p, r in zip(cp, resps)], lens, tok.pad_token_id,
                             support=own["support_ids"], k=K)
    return student, build_learn_batch(samples, sp, cp, scores)


def _algo(**kw):
    return OmegaConf.structured(AlgoConfig(top_k=K, **kw))


def _views(student, mb, pad, grad_ctx: bool):
    logits, mask = response_logits(student, mb.student_seqs, mb.resp_lens, pad)
    with torch.set_grad_enabled(grad_ctx):
        ctx, _ = response_logits(student, mb.context_seqs, mb.resp_lens, pad)
    return logits, ctx, mask & mb.mask


def _grads(student, loss):
    return torch.autograd.grad(loss, list(student.parameters()), allow_unused=True)


@pytest.mark.parametrize("kw", [dict(nca_mode="sg_context"), dict(nca_positions="agree"), dict(nca_support="topk"),
                                dict(nca_mode="sg_context", nca_positions="agree", nca_support="topk")])
def test_variant_adds_beta_times_its_term_with_the_same_gradients(setup, tok, kw):
    student, mb = setup
    pad, beta = tok.pad_token_id, 0.5
    main, _ = student_loss(student, mb, _algo(), pad)
    total, m = student_loss(student, mb, _algo(nca_beta=beta, **kw), pad)
    # the reference: the two forward passes by hand, the with-context one without a graph for sg_context
    logits, ctx, mask = _views(student, mb, pad, grad_ctx=kw.get("nca_mode", "paper") == "paper")
    reg, rm = consistency_term(logits, ctx, mask, mode=kw.get("nca_mode", "paper"),
                               positions=kw.get("nca_positions", "all"), support=kw.get("nca_support", "full"),
                               top_k=K)
    assert reg.item() > 1e-5
    if kw.get("nca_positions") == "agree":  # the filter is exercised: some positions kept, some dropped
        assert 0 < rm["kept"] < 1
    torch.testing.assert_close(total.detach(), main.detach() + beta * reg.detach(), atol=1e-5, rtol=1e-5)
    assert m["loss/consistency"] == pytest.approx(rm["kl"], rel=1e-5)
    assert (m["loss/consistency_first"], m["loss/consistency_rest"], m["loss/consistency_kept"]) == pytest.approx(
        (rm["first"], rm["rest"], rm["kept"]), rel=1e-5)
    main_ref, _ = student_loss(student, mb, _algo(), pad)
    for g, r in zip(_grads(student, total), _grads(student, main_ref + beta * reg)):
        if g is None or r is None:
            assert g is None and r is None
        else:
            torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4)


def test_sg_context_builds_no_graph_through_the_with_context_forward(setup, tok, monkeypatch):
    """The point of sg_context: the second forward pass keeps no activations (no extra backward)."""
    from opcd.learner import objective

    student, mb = setup
    seen = []
    real = objective.response_logits

    def spy(model, seqs, lens, pad_id, **kw):
        out = real(model, seqs, lens, pad_id, **kw)
        seen.append((seqs is mb.context_seqs, out[0].requires_grad))
        return out

    monkeypatch.setattr(objective, "response_logits", spy)
    for mode, ctx_grad in (("sg_context", False), ("paper", True)):
        seen.clear()
        student_loss(student, mb, _algo(nca_beta=0.5, nca_mode=mode), tok.pad_token_id)
        assert (True, ctx_grad) in seen and (False, True) in seen


def test_nca_after_step_keeps_the_term_off_then_ramps_it():
    assert [nca_weight(0.5, 0, s, after_step=10) for s in (1, 10, 11, 30)] == [0.0, 0.0, 0.5, 0.5]
    assert [nca_weight(0.5, 4, s, after_step=10) for s in (10, 11, 12, 14, 20)] == [0.0, 0.125, 0.25, 0.5, 0.5]
    assert [nca_weight(0.5, 4, s) for s in (1, 2, 4, 10)] == [0.125, 0.25, 0.5, 0.5]  # default: as before


def test_before_nca_after_step_the_loss_is_the_distillation_term_alone(setup, tok):
    student, mb = setup
    main, _ = student_loss(student, mb, _algo(), tok.pad_token_id)
    early, m = student_loss(student, mb, _algo(nca_beta=0.5, nca_after_step=5), tok.pad_token_id, step=5)
    late, m_late = student_loss(student, mb, _algo(nca_beta=0.5, nca_after_step=5), tok.pad_token_id, step=6)
    assert "loss/consistency" not in m and early.item() == pytest.approx(main.item(), rel=1e-6)
    assert m_late["loss/nca_beta"] == 0.5 and late.item() > main.item()
