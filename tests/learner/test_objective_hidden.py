"""The learner objective when the teacher ships hidden states (algo.teacher_transfer=hidden): the same
loss and parameter gradients as when it ships [B, T, V] log-probs, for full_reverse_kl and jsd."""
import pytest
import torch
from omegaconf import OmegaConf

from opcd.batch import build_learn_batch
from opcd.chat import encode_answer, encode_prompt
from opcd.config import AlgoConfig
from opcd.engine import Sample
from opcd.learner.objective import student_loss
from opcd.modeling import load_causal_lm
from opcd.models.toy.pretrain import build_model
from opcd.teacher.scoring import score_responses


@pytest.fixture(scope="module")
def setup(tok, tiny_model_dir):
    torch.set_num_threads(1)
    student = load_causal_lm(tiny_model_dir)
    torch.manual_seed(1)
    teacher = build_model(tok, hidden=32, layers=1, heads=2).eval()  # cross-size: d=32, the student's 64
    recs = [("abc", "Reverse the string.", "cba"), ("hello", "Reverse the string.", "ol"),
            ("xy", "Examples:\nab -> ba", "yxyxy")]
    sp = [encode_prompt(tok, p) for p, _, _ in recs]
    cp = [encode_prompt(tok, p, c) for p, c, _ in recs]
    resps = [encode_answer(tok, a) for _, _, a in recs]
    return student, teacher, sp, cp, resps


def _batch(tok, setup, support: str, temperature: float):
    student, teacher, sp, cp, resps = setup
    lens = [len(r) for r in resps]
    samples = [Sample(p, r, [0.0] * len(r)) for p, r in zip(sp, resps)]
    scores = score_responses(teacher, [p + r for p, r in zip(cp, resps)], lens, tok.pad_token_id, support=support,
                             temperature=temperature)
    return build_learn_batch(samples, sp, cp, scores)


def _loss_and_grads(student, mb, algo, pad, head=None):
    loss, m = student_loss(student, mb, algo, pad, teacher_head=head)
    params = [p for p in student.parameters()]
    return loss, m, torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize("loss,temperature,nca", [("full_reverse_kl", 1.0, 0.0), ("full_reverse_kl", 0.7, 0.5),
                                                  ("jsd", 1.0, 0.0), ("jsd", 0.7, 0.0)])
def test_hidden_batch_gives_the_log_prob_batch_loss_and_gradients(tok, setup, loss, temperature, nca):
    student, teacher = setup[:2]
    algo = OmegaConf.structured(AlgoConfig(loss=loss, temperature=temperature, nca_beta=nca))
    shipped_lp = _batch(tok, setup, "full", temperature)
    shipped_h = _batch(tok, setup, "hidden", temperature)
    assert shipped_lp.teacher_hidden is None and shipped_h.teacher_hidden.shape[-1] == 32
    head = teacher.get_output_embeddings().weight.detach().float()
    ref, m_ref, g_ref = _loss_and_grads(student, shipped_lp, algo, tok.pad_token_id)
    got, m, g = _loss_and_grads(student, shipped_h, algo, tok.pad_token_id, head)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert ref.item() > 1e-3 and set(m) == set(m_ref)
    for a, b in zip(g, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_hidden_batch_without_a_teacher_head_is_refused(tok, setup):
    mb = _batch(tok, setup, "hidden", 1.0)
    with pytest.raises(ValueError, match="no copy of the teacher's LM head"):
        student_loss(setup[0], mb, OmegaConf.structured(AlgoConfig(loss="full_reverse_kl")), tok.pad_token_id)


def test_learn_batch_slices_the_hidden_states(tok, setup):
    mb = _batch(tok, setup, "hidden", 1.0)
    part = mb.slice(1, 2)  # "ol": the shortest response
    assert part.teacher_hidden.shape == (1, mb.resp_lens[1], 32)
    assert torch.equal(part.teacher_hidden, mb.teacher_hidden[1:2, :mb.resp_lens[1]])
