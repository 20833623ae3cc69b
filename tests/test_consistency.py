"""opcd.consistency: the consistency regulariser's variants against hand-computed values, which side
gets the gradient, the position filter, the top-k support and the per-position-bucket metrics."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from opcd import losses
from opcd.config import AlgoConfig
from opcd.consistency import (FIRST_TOKENS, agree_positions, anchored_kl, check_nca_options, consistency_term,
                              position_buckets, topk_support)

# Two positions of one sequence, V = 3. Position 0: the views disagree (argmax 0 vs 1); position 1: they agree.
P_N0, P_C0 = [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]
P_N1, P_C1 = [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _logits(*rows, grad=True):
    x = torch.tensor([[[math.log(v) for v in r] for r in rows]], dtype=torch.float64)
    return x.requires_grad_(grad)


MASK = torch.tensor([[True, True]])


def test_anchored_kl_is_the_forward_kl_from_the_anchor():
    a, m = _logits(P_N0, P_N1), _logits(P_C0, P_C1)
    got = anchored_kl(a, m)
    assert got.tolist()[0] == pytest.approx([_kl(P_N0, P_C0), _kl(P_N1, P_C1)], rel=1e-12)


def test_paper_mode_value_and_gradient_reach_only_the_with_context_side():
    n, c = _logits(P_N0, P_N1), _logits(P_C0, P_C1)
    loss, m = consistency_term(n, c, MASK, mode="paper")
    assert loss.item() == pytest.approx((_kl(P_N0, P_C0) + _kl(P_N1, P_C1)) / 2, rel=1e-12)
    g_n, g_c = torch.autograd.grad(loss, [n, c], allow_unused=True)
    assert g_n is None  # the no-context side is the stop-gradient anchor
    # d/dz_c KL(p_n || softmax(z_c)) = softmax(z_c) - p_n, averaged over the 2 tokens
    want = torch.tensor([[[(q - p) / 2 for p, q in zip(P_N0, P_C0)], [(q - p) / 2 for p, q in zip(P_N1, P_C1)]]],
                        dtype=torch.float64)
    torch.testing.assert_close(g_c, want)
    assert m["kl"] == pytest.approx(loss.item()) and m["kept"] == 1.0


def test_sg_context_mode_value_and_gradient_reach_only_the_no_context_side():
    n, c = _logits(P_N0, P_N1), _logits(P_C0, P_C1)
    loss, _ = consistency_term(n, c, MASK, mode="sg_context")
    assert loss.item() == pytest.approx((_kl(P_C0, P_N0) + _kl(P_C1, P_N1)) / 2, rel=1e-12)
    assert loss.item() != pytest.approx(consistency_term(n, c, MASK)[0].item())  # not the paper's value
    g_n, g_c = torch.autograd.grad(loss, [n, c], allow_unused=True)
    assert g_c is None  # the with-context side is the anchor: it can be computed under no_grad
    want = torch.tensor([[[(p - q) / 2 for p, q in zip(P_N0, P_C0)], [(p - q) / 2 for p, q in zip(P_N1, P_C1)]]],
                        dtype=torch.float64)
    torch.testing.assert_close(g_n, want)


def test_agree_positions_drop_disagreeing_tokens_without_reweighting_the_rest():
    n, c = _logits(P_N0, P_N1), _logits(P_C0, P_C1)
    assert agree_positions(n, c).tolist() == [[False, True]]
    loss, m = consistency_term(n, c, MASK, positions="agree")
    assert loss.item() == pytest.approx(_kl(P_N1, P_C1) / 2, rel=1e-12)  # denominator: both real tokens
    assert m["kept"] == 0.5
    g_c = torch.autograd.grad(loss, [c])[0]
    assert not g_c[0, 0].any() and g_c[0, 1].abs().sum() > 0  # no push at the disagreeing position


def test_topk_support_renormalises_both_sides_over_the_no_context_top_k():
    n, c = _logits(P_N0, P_N1), _logits(P_C0, P_C1)
    assert topk_support(n, 2).tolist() == [[[0, 1], [0, 1]]]

    def renorm(p):
        s = p[0] + p[1]
        return [p[0] / s, p[1] / s]

    want = (_kl(renorm(P_N0), renorm(P_C0)) + _kl(renorm(P_N1), renorm(P_C1))) / 2
    loss, _ = consistency_term(n, c, MASK, support="topk", top_k=2)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    g_c = torch.autograd.grad(loss, [c])[0]
    assert not g_c[..., 2].any()  # the token outside the support gets no push
    full, _ = consistency_term(n, c, MASK, support="topk", top_k=3)  # k = V is the full vocabulary
    assert full.item() == pytest.approx(consistency_term(n, c, MASK)[0].item(), rel=1e-12)


def test_temperature_divides_both_sides_logits():
    n, c = torch.randn(2, 5, 7, dtype=torch.float64), torch.randn(2, 5, 7, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    for mode in ("paper", "sg_context"):
        got, _ = consistency_term(n, c, mask, mode=mode, temperature=2.0)
        ref, _ = consistency_term(n / 2, c / 2, mask, mode=mode)
        assert got.item() == pytest.approx(ref.item(), rel=1e-12)


def test_paper_mode_equals_the_legacy_regulariser():
    n, c = torch.randn(3, 6, 11), torch.randn(3, 6, 11)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [1] * 6], dtype=torch.bool)
    for agg in ("token_mean", "seq_mean"):
        legacy, _ = losses.consistency_regularizer(n, c, mask, temperature=0.7, aggregation=agg)
        new, _ = consistency_term(n, c, mask, temperature=0.7, aggregation=agg)
        assert new.item() == pytest.approx(legacy.item(), rel=1e-6)


def test_position_buckets_split_first_tokens_from_the_rest():
    per = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0, 20.0], [5.0, 6.0, 7.0, 8.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)  # 99s are padding
    first, rest = position_buckets(per, mask)
    assert FIRST_TOKENS == 4
    assert first == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / 6) and rest == pytest.approx(15.0)
    assert position_buckets(per[:, :3], mask[:, :3]) == (pytest.approx(17 / 5), 0.0)  # empty bucket -> 0


def test_metrics_report_where_the_term_pushes():
    n = torch.zeros(1, 6, 3)
    c = torch.zeros(1, 6, 3)
    c[0, 0] = torch.tensor([2.0, 0.0, 0.0])  # only the first token differs between the views
    _, m = consistency_term(n, c, torch.ones(1, 6, dtype=torch.bool))
    assert m["first"] > 0 and m["rest"] == 0.0
    assert m["kl"] == pytest.approx(m["first"] * 4 / 6, rel=1e-6)


@pytest.mark.parametrize("field,value,msg", [("nca_mode", "both", "unknown algo.nca_mode 'both'"),
                                             ("nca_positions", "first", "unknown algo.nca_positions"),
                                             ("nca_support", "top16", "unknown algo.nca_support"),
                                             ("nca_after_step", -1, "nca_after_step must be >= 0")])
def test_bad_options_are_refused_with_the_accepted_values(field, value, msg):
    check_nca_options(AlgoConfig())  # the defaults are valid
    algo = OmegaConf.structured(AlgoConfig())
    setattr(algo, field, value)
    with pytest.raises(ValueError, match=msg):
        check_nca_options(algo)
    from opcd.algorithms import algo_spec

    with pytest.raises(ValueError, match=msg):  # refused at start-up, where the loop builds its AlgoSpec
        algo_spec(algo)
    with pytest.raises(ValueError, match="unknown nca mode"):
        consistency_term(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.ones(1, 1), mode="both")
