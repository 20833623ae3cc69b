"""opcd.losses against brute-force float64 references (explicit loops over tokens / vocab).

Gradients are compared by running ``torch.autograd.grad`` on the function under test and on a
reference loss built token by token from elementary ops on the same leaf tensors.
"""
import math
import os
import warnings

import pytest
import torch

from opcd import losses as L

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)
B, T, V, K, H = 3, 4, 7, 3, 5
# Row 2 is fully masked: seq_mean must ignore it, token_mean must not divide by it.
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=DT)
MODES = ["token_mean", "seq_mean"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed=0, scale=2.0, grad=False):
    x = torch.randn(*shape, generator=gen(seed), dtype=DT) * scale
    return x.requires_grad_(grad)


def topk_ids(seed=0):
    # k distinct ids per position.
    return torch.stack([torch.randperm(V, generator=gen(seed + i))[:K] for i in range(B * T)]
                       ).view(B, T, K)


def valid_tokens(mask=MASK):
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t] != 0]


def ref_log_softmax(row, tau=1.0):
    z = row / tau
    return z - torch.log(sum(torch.exp(z[v]) for v in range(z.shape[0])))


def ref_aggregate(per, mask, mode):
    """per: dict (b, t) -> 0-dim tensor, only for valid tokens."""
    if mode == "token_mean":
        return sum(per[bt] * mask[bt] for bt in per) / sum(mask[bt] for bt in per)
    seq_means = []
    for b in range(mask.shape[0]):
        toks = [(bb, t) for (bb, t) in per if bb == b]
        if toks:
            seq_means.append(sum(per[bt] * mask[bt] for bt in toks) / sum(mask[bt] for bt in toks))
    return sum(seq_means) / len(seq_means)


def ref_kl(lp_p, lp_q, support):
    """sum_{v in support} p(v) (log p(v) - log q(v))."""
    return sum(torch.exp(lp_p[v]) * (lp_p[v] - lp_q[v]) for v in support)


def assert_close(a, b):
    torch.testing.assert_close(a, b, **TOL)


def check(loss, ref, leaves):
    assert loss.dim() == 0
    assert_close(loss, ref)
    g = torch.autograd.grad(loss, leaves, retain_graph=True)
    g_ref = torch.autograd.grad(ref, leaves)
    for a, b in zip(g, g_ref):
        assert_close(a, b)


# --------------------------------------------------------------------------- aggregate
@pytest.mark.parametrize("mode", MODES)
def test_aggregate(mode):
    per = rand(B, T, seed=1)
    per_dict = {bt: per[bt] for bt in valid_tokens()}
    assert_close(L.aggregate(per, MASK, mode), ref_aggregate(per_dict, MASK, mode))
    # bool mask is accepted; NaN at masked positions cannot leak
    poisoned = per.masked_fill(MASK == 0, float("nan"))
    assert_close(L.aggregate(poisoned, MASK.bool(), mode), ref_aggregate(per_dict, MASK, mode))
    # empty mask -> 0, not NaN
    assert L.aggregate(per, torch.zeros(B, T), mode).item() == 0.0


def test_aggregate_hand_values():
    per = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]], dtype=DT)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=DT)
    assert L.aggregate(per, mask, "token_mean").item() == pytest.approx(16 / 4)
    assert L.aggregate(per, mask, "seq_mean").item() == pytest.approx((2 + 10) / 2)


def _calls():
    lg, ids, lp = rand(B, T, V), topk_ids(), rand(B, T, K)
    s = rand(B, T)
    return {
        "aggregate": lambda a: L.aggregate(s, MASK, a),
        "topk_reverse_kl": lambda a: L.topk_reverse_kl(lg, ids, lp, MASK, aggregation=a),
        "full_reverse_kl": lambda a: L.full_reverse_kl(lg, lg, MASK, aggregation=a),
        "chunked_full_reverse_kl": lambda a: L.chunked_full_reverse_kl(
            rand(B, T, H), rand(V, H), rand(B, T, V), MASK, aggregation=a),
        "sampled_reverse_kl": lambda a: L.sampled_reverse_kl(s, s, s, MASK, aggregation=a),
        "forward_kl": lambda a: L.forward_kl(lg, ids, lp, MASK, aggregation=a),
        "generalized_jsd": lambda a: L.generalized_jsd(lg, lg, MASK, aggregation=a),
        "nll": lambda a: L.nll(lg, ids[..., 0], MASK, aggregation=a),
        "consistency_regularizer": lambda a: L.consistency_regularizer(lg, lg, MASK, aggregation=a),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_bad_aggregation_raises(name):
    call = _calls()[name]
    call("token_mean")  # sanity: the call itself is well formed
    with pytest.raises(ValueError, match="aggregation"):
        call("mean")


# --------------------------------------------------------------------------- topk reverse KL (OPCD)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [1.0, 0.7])
@pytest.mark.parametrize("renorm", [False, True])
def test_topk_reverse_kl(mode, tau, renorm):
    logits = rand(B, T, V, seed=2, grad=True)
    ids = topk_ids(3)
    t_lp = torch.log_softmax(rand(B, T, V, seed=4), -1).gather(-1, ids)  # teacher at tau already
    loss, m = L.topk_reverse_kl(logits, ids, t_lp, MASK, temperature=tau, renormalize=renorm,
                                aggregation=mode)
    per = {}
    for b, t in valid_tokens():
        s_full = ref_log_softmax(logits[b, t], tau)
        s = torch.stack([s_full[ids[b, t, j]] for j in range(K)])
        q = t_lp[b, t]
        if renorm:
            s = s - torch.log(sum(torch.exp(s[j]) for j in range(K)))
            q = q - torch.log(sum(torch.exp(q[j]) for j in range(K)))
        per[(b, t)] = ref_kl(s, q, range(K))
    ref = ref_aggregate(per, MASK, mode)
    check(loss, ref, [logits])
    assert m["kl"] == pytest.approx(ref.item(), rel=1e-10)
    if renorm:
        assert all(v.item() >= -1e-12 for v in per.values())


def test_topk_reverse_kl_equals_full_kl_when_k_is_vocab():
    logits = rand(B, T, V, seed=5, grad=True)
    teacher = rand(B, T, V, seed=6)
    ids = torch.arange(V).expand(B, T, V)
    t_lp = torch.log_softmax(teacher / 0.8, -1)
    a, _ = L.topk_reverse_kl(logits, ids, t_lp, MASK, temperature=0.8)
    b, _ = L.full_reverse_kl(logits, teacher, MASK, temperature=0.8)
    check(a, b, [logits])


# --------------------------------------------------------------------------- full / chunked reverse KL
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [1.0, 1.3])
def test_full_reverse_kl(mode, tau):
    logits = rand(B, T, V, seed=7, grad=True)
    teacher = rand(B, T, V, seed=8, grad=True)
    loss, m = L.full_reverse_kl(logits, teacher, MASK, temperature=tau, aggregation=mode)
    per = {(b, t): ref_kl(ref_log_softmax(logits[b, t], tau), ref_log_softmax(teacher[b, t], tau),
                          range(V)) for b, t in valid_tokens()}
    ref = ref_aggregate(per, MASK, mode)
    assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, [logits], retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, [logits])
    assert_close(g, g_ref)
    # teacher is a constant
    assert torch.autograd.grad(loss, [teacher], allow_unused=True)[0] is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [1.0, 0.6])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64])  # 5 valid rows: 2 and 3 do not divide
@pytest.mark.parametrize("lazy", [False, True])
def test_chunked_matches_full(mode, tau, chunk_size, lazy):
    hidden = rand(B, T, H, seed=9, grad=True)
    head = rand(V, H, seed=10, scale=0.7, grad=True)
    teacher_logits = rand(B, T, V, seed=11)
    t_lp = torch.log_softmax(teacher_logits / tau, -1)
    calls = []

    def teacher_rows(rows):
        calls.append(rows.clone())
        return t_lp.view(-1, V)[rows]

    loss, m = L.chunked_full_reverse_kl(hidden, head, teacher_rows if lazy else t_lp, MASK,
                                        temperature=tau, chunk_size=chunk_size, aggregation=mode)
    ref, m_ref = L.full_reverse_kl(hidden @ head.T, teacher_logits, MASK, temperature=tau,
                                   aggregation=mode)
    check(loss, ref, [hidden, head])
    assert m["kl"] == pytest.approx(m_ref["kl"], rel=1e-10)
    if lazy:
        # only masked-in rows are ever requested, in chunks of at most chunk_size
        flat_valid = (MASK.view(-1) != 0).nonzero().squeeze(1)
        assert all(len(c) <= chunk_size for c in calls)
        assert set(torch.cat(calls).tolist()) == set(flat_valid.tolist())


def test_chunked_all_masked_is_zero_with_zero_grad():
    hidden, head = rand(B, T, H, grad=True), rand(V, H, grad=True)
    loss, _ = L.chunked_full_reverse_kl(hidden, head, rand(B, T, V), torch.zeros(B, T))
    gh, gw = torch.autograd.grad(loss, [hidden, head])
    assert loss.item() == 0.0 and not gh.any() and not gw.any()


# --------------------------------------------------------------------------- sampled reverse KL
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("clip", [10.0, 1.5, None])
def test_sampled_reverse_kl(mode, clip):
    lp_s = (-rand(B, T, seed=12).abs()).requires_grad_(True)
    lp_b = lp_s.detach() + rand(B, T, seed=13, scale=0.8)  # some ratios above 1.5, some below
    lp_t = -rand(B, T, seed=14).abs()
    loss, m = L.sampled_reverse_kl(lp_s, lp_b, lp_t, MASK, clip_ratio=clip, aggregation=mode)
    per, grad_ref, kl, ratio = {}, torch.zeros(B, T, dtype=DT), {}, {}
    # d aggregate / d per_token[b, t]: the aggregation weight of token (b, t)
    seqs = [b for b in range(B) if MASK[b].any()]
    n_tok = MASK.sum()
    for b, t in valid_tokens():
        rho = math.exp(lp_s[b, t].item() - lp_b[b, t].item())
        rho_c = rho if clip is None else min(rho, clip)
        diff = lp_s[b, t].item() - lp_t[b, t].item()
        per[(b, t)] = torch.tensor(rho_c * diff, dtype=DT)
        kl[(b, t)], ratio[(b, t)] = torch.tensor(diff, dtype=DT), torch.tensor(rho, dtype=DT)
        w = 1 / n_tok if mode == "token_mean" else 1 / (len(seqs) * MASK[b].sum())
        grad_ref[b, t] = w * rho_c * diff  # = rho_c * (logp_s - logp_t) * d logp_s
    assert_close(loss, ref_aggregate(per, MASK, mode))
    (g,) = torch.autograd.grad(loss, [lp_s])
    assert_close(g, grad_ref)
    assert m["kl"] == pytest.approx(ref_aggregate(kl, MASK, mode).item(), rel=1e-10)
    assert m["ratio"] == pytest.approx(ref_aggregate(ratio, MASK, mode).item(), rel=1e-10)
    if clip == 1.5:
        assert 0 < m["clip_frac"] < 1  # the test really exercises clipping


def test_sampled_reverse_kl_grad_through_logits():
    """With logp_s = log_softmax(logits)[y]: grad = sum_t w * rho * (logp_s - logp_t) * d logp_s."""
    logits = rand(B, T, V, seed=15, grad=True)
    y = topk_ids(16)[..., 0]
    lp_s = torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    lp_b = lp_s.detach() + rand(B, T, seed=17, scale=0.3)
    lp_t = lp_s.detach() + rand(B, T, seed=18)
    loss, _ = L.sampled_reverse_kl(lp_s, lp_b, lp_t, MASK, clip_ratio=None)
    (g,) = torch.autograd.grad(loss, [logits])
    expected = torch.zeros_like(logits)
    for b, t in valid_tokens():
        rho = torch.exp(lp_s[b, t] - lp_b[b, t]).detach()
        p = torch.softmax(logits[b, t].detach(), -1)
        dlogp = torch.nn.functional.one_hot(y[b, t], V).to(DT) - p
        expected[b, t] = rho * (lp_s[b, t] - lp_t[b, t]).detach() * dlogp / MASK.sum()
    assert_close(g, expected)


# --------------------------------------------------------------------------- forward KL
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("renorm", [False, True])
def test_forward_kl(mode, tau, renorm):
    logits = rand(B, T, V, seed=19, grad=True)
    ids = topk_ids(20)
    t_lp = torch.log_softmax(rand(B, T, V, seed=21), -1).gather(-1, ids)
    loss, m = L.forward_kl(logits, ids, t_lp, MASK, temperature=tau, renormalize=renorm,
                           aggregation=mode)
    per = {}
    for b, t in valid_tokens():
        s_full = ref_log_softmax(logits[b, t], tau)
        s = torch.stack([s_full[ids[b, t, j]] for j in range(K)])
        q = t_lp[b, t]
        if renorm:
            q = q - torch.log(sum(torch.exp(q[j]) for j in range(K)))
        per[(b, t)] = ref_kl(q, s, range(K))
    ref = ref_aggregate(per, MASK, mode)
    check(loss, ref, [logits])
    assert m["kl"] == pytest.approx(ref.item(), rel=1e-10)


# --------------------------------------------------------------------------- GKD generalized JSD
def ref_jsd(s_lp, t_lp, beta):
    if beta == 0:
        return ref_kl(t_lp, s_lp, range(V))
    if beta == 1:
        return ref_kl(s_lp, t_lp, range(V))
    m_lp = torch.log((1 - beta) * torch.exp(s_lp) + beta * torch.exp(t_lp))
    return beta * ref_kl(t_lp, m_lp, range(V)) + (1 - beta) * ref_kl(s_lp, m_lp, range(V))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("tau", [1.0, 0.9])
def test_generalized_jsd(mode, beta, tau):
    logits = rand(B, T, V, seed=22, grad=True)
    teacher = rand(B, T, V, seed=23)
    loss, m = L.generalized_jsd(logits, teacher, MASK, beta=beta, temperature=tau,
                                aggregation=mode)
    per = {(b, t): ref_jsd(ref_log_softmax(logits[b, t], tau), ref_log_softmax(teacher[b, t], tau),
                           beta) for b, t in valid_tokens()}
    ref = ref_aggregate(per, MASK, mode)
    check(loss, ref, [logits])
    assert m["jsd"] == pytest.approx(ref.item(), rel=1e-10)


def test_generalized_jsd_endpoints_are_kls():
    s, t = rand(B, T, V, seed=24), rand(B, T, V, seed=25)
    fwd = L.forward_kl(s, torch.arange(V).expand(B, T, V), torch.log_softmax(t, -1), MASK)[0]
    assert_close(L.generalized_jsd(s, t, MASK, beta=0.0)[0], fwd)
    assert_close(L.generalized_jsd(s, t, MASK, beta=1.0)[0], L.full_reverse_kl(s, t, MASK)[0])


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_matches_trl(beta):
    pytest.importorskip("trl")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from trl.experimental.gkd import GKDTrainer  # trl >= 0.2x: GKD lives in experimental
        except ImportError:
            from trl import GKDTrainer
    trl_jsd = GKDTrainer.generalized_jsd_loss
    logits = rand(B, T, V, seed=26, grad=True)
    teacher = rand(B, T, V, seed=27)
    tau = 0.8
    ones = torch.ones(B, T, dtype=DT)
    ours, _ = L.generalized_jsd(logits, teacher, ones, beta=beta, temperature=tau)
    # per-token values (reduction="none" returns [B, T, V] terms)
    theirs_tok = trl_jsd(logits, teacher, beta=beta, temperature=tau, reduction="none").sum(-1)
    assert_close(ours, theirs_tok.mean())
    # "batchmean" with labels = masked sum / number of unmasked tokens = our token_mean
    labels = torch.zeros(B, T, dtype=torch.long)
    theirs = trl_jsd(logits, teacher, labels=labels, beta=beta, temperature=tau)
    check(ours, theirs, [logits])
    labels = labels.masked_fill(MASK == 0, -100)
    ours_m, _ = L.generalized_jsd(logits, teacher, MASK, beta=beta, temperature=tau)
    check(ours_m, trl_jsd(logits, teacher, labels=labels, beta=beta, temperature=tau), [logits])


# --------------------------------------------------------------------------- NLL
@pytest.mark.parametrize("mode", MODES)
def test_nll(mode):
    logits = rand(B, T, V, seed=28, grad=True)
    y = topk_ids(29)[..., 0]
    loss, m = L.nll(logits, y, MASK, aggregation=mode)
    per = {(b, t): -ref_log_softmax(logits[b, t])[y[b, t]] for b, t in valid_tokens()}
    ref = ref_aggregate(per, MASK, mode)
    check(loss, ref, [logits])
    assert m["nll"] == pytest.approx(ref.item(), rel=1e-10)


# --------------------------------------------------------------------------- consistency regulariser
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [1.0, 1.5])
def test_consistency_regularizer(mode, tau):
    noctx = rand(B, T, V, seed=30, grad=True)
    ctx = rand(B, T, V, seed=31, grad=True)
    loss, m = L.consistency_regularizer(noctx, ctx, MASK, temperature=tau, aggregation=mode)
    per = {(b, t): ref_kl(ref_log_softmax(noctx[b, t].detach(), tau), ref_log_softmax(ctx[b, t], tau),
                          range(V)) for b, t in valid_tokens()}
    ref = ref_aggregate(per, MASK, mode)
    g_noctx, g_ctx = torch.autograd.grad(loss, [noctx, ctx], allow_unused=True, retain_graph=True)
    assert g_noctx is None or not g_noctx.any()  # stop-gradient on the no-context side
    (g_ref,) = torch.autograd.grad(ref, [ctx])
    assert_close(loss, ref)
    assert_close(g_ctx, g_ref)
    # ... whereas the un-stopped KL would push noctx too
    full, _ = L.full_reverse_kl(ctx, noctx, MASK, temperature=tau, aggregation=mode)
    assert_close(loss, L.full_reverse_kl(noctx, ctx, MASK, temperature=tau, aggregation=mode)[0])
    assert full.item() != pytest.approx(loss.item())


# --------------------------------------------------------------------------- padding robustness
def test_garbage_at_masked_positions_is_harmless():
    logits = rand(B, T, V, seed=32, grad=True)
    ids, t_lp = topk_ids(33), torch.log_softmax(rand(B, T, V, seed=34), -1).gather(-1, topk_ids(33))
    lp_s = torch.log_softmax(logits, -1).gather(-1, ids[..., :1]).squeeze(-1)
    pad = MASK == 0
    bad_ids = ids.masked_fill(pad[..., None], -100)
    bad_lp = t_lp.masked_fill(pad[..., None], float("-inf"))
    bad_seq = lp_s.detach().masked_fill(pad, float("-inf"))
    cases = [
        (lambda i, q, s: L.topk_reverse_kl(logits, i, q, MASK)),
        (lambda i, q, s: L.topk_reverse_kl(logits, i, q, MASK, renormalize=True)),
        (lambda i, q, s: L.forward_kl(logits, i, q, MASK)),
        (lambda i, q, s: L.nll(logits, i[..., 0], MASK)),
        (lambda i, q, s: L.sampled_reverse_kl(lp_s, s, s - 1.0, MASK)),
    ]
    for f in cases:
        clean, _ = f(ids, t_lp, lp_s.detach())
        dirty, _ = f(bad_ids, bad_lp, bad_seq)
        (g_clean,) = torch.autograd.grad(clean, [logits], retain_graph=True)
        (g_dirty,) = torch.autograd.grad(dirty, [logits], retain_graph=True)
        assert torch.isfinite(dirty) and torch.isfinite(g_dirty).all()
        assert_close(dirty, clean)
        assert_close(g_dirty, g_clean)


def test_forward_kl_ignores_missing_teacher_entries():
    """A teacher top-k entry of -inf (engine returned fewer than k) contributes 0 log 0 = 0."""
    logits = rand(B, T, V, seed=35, grad=True)
    ids = topk_ids(36)
    t_lp = torch.log_softmax(rand(B, T, V, seed=37), -1).gather(-1, ids)
    t_lp[..., -1] = float("-inf")
    loss, _ = L.forward_kl(logits, ids, t_lp, MASK, renormalize=True)
    ref, _ = L.forward_kl(logits, ids[..., :-1], t_lp[..., :-1], MASK, renormalize=True)
    check(loss, ref, [logits])


def _low_precision_cases():
    """name -> (loss(*inputs), inputs); the first input gets the gradient. Logits are scaled x4 so
    that bf16 arithmetic inside a loss would be visibly off (|z| up to ~20: bf16 steps of 0.125)."""
    lg, tl, ids = rand(B, T, V, seed=38, scale=8.0), rand(B, T, V, seed=39, scale=8.0), topk_ids(40)
    t_topk = torch.log_softmax(tl, -1).gather(-1, ids)
    s, b_, t_ = (torch.log_softmax(rand(B, T, V, seed=i), -1)[..., 0] for i in (41, 42, 43))
    hid, head, t_hid = rand(B, T, H, seed=44, scale=4.0), rand(V, H, seed=45, scale=2.0), rand(B, T, H, seed=46, scale=4.0)
    return {
        "topk_reverse_kl": (lambda x, i, t: L.topk_reverse_kl(x, i, t, MASK), (lg, ids, t_topk)),
        "full_reverse_kl": (lambda x, t: L.full_reverse_kl(x, t, MASK), (lg, tl)),
        "sampled_reverse_kl": (lambda x, b, t: L.sampled_reverse_kl(x, b, t, MASK), (s, b_, t_)),
        "forward_kl": (lambda x, i, t: L.forward_kl(x, i, t, MASK), (lg, ids, t_topk)),
        "generalized_jsd": (lambda x, t: L.generalized_jsd(x, t, MASK), (lg, tl)),
        "nll": (lambda x, i: L.nll(x, i, MASK), (lg, ids[..., 0])),
        "consistency_regularizer": (lambda x, t: L.consistency_regularizer(t, x, MASK), (lg, tl)),
        "chunked_full_reverse_kl": (lambda x, w, t: L.chunked_full_reverse_kl(x, w, t, MASK, chunk_size=5),
                                    (hid, head, torch.log_softmax(tl, -1))),
        "chunked_reverse_kl_from_hidden": (lambda x, w, th: L.chunked_reverse_kl_from_hidden(x, w, th, w, MASK, chunk_size=5),
                                           (hid, head, t_hid)),
    }


@pytest.mark.parametrize("name", list(_low_precision_cases()))
def test_low_precision_inputs_upcast(name):
    """Losses accumulate in fp32 whatever the dtype: bf16 inputs give an fp32 loss equal to the fp32
    computation on the same (bf16-rounded) values, the gradient comes back in the input's dtype, and
    a CPU bf16 autocast around the loss (the learner's forward runs under one) changes nothing."""
    fn, inputs = _low_precision_cases()[name]
    low = [x.to(torch.bfloat16) if x.is_floating_point() else x for x in inputs]
    low[0].requires_grad_(True)
    loss, _ = fn(*low)
    assert loss.dtype == torch.float32
    (g,) = torch.autograd.grad(loss, [low[0]])
    assert g.dtype == torch.bfloat16
    wide = [x.detach().double() if x.is_floating_point() else x for x in low]
    ref, _ = fn(*wide)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    f32 = [x.detach().float() if x.is_floating_point() else x for x in low]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under, _ = fn(*f32)
    assert under.dtype == torch.float32
    assert under.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_chunked_keeps_no_vocab_sized_activations():
    """Checkpointing: nothing of size rows*V is saved for backward; teacher rows are recomputed."""
    b, t, v, h, chunk = 1, 48, 40, 6, 4
    hidden, head = rand(b, t, h, seed=40, grad=True), rand(v, h, seed=41, grad=True)
    t_lp = torch.log_softmax(rand(b, t, v, seed=42), -1)
    calls, saved = [], []

    def teacher_rows(rows):
        calls.append(len(rows))
        return t_lp.view(-1, v)[rows]

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss, _ = L.chunked_full_reverse_kl(hidden, head, teacher_rows, torch.ones(b, t),
                                            chunk_size=chunk)
    n_chunks = t // chunk
    assert len(calls) == n_chunks and max(saved) < 2 * chunk * v
    gh, gw = torch.autograd.grad(loss, [hidden, head])
    assert len(calls) == 2 * n_chunks  # each chunk recomputed once in backward
    ref, _ = L.full_reverse_kl(hidden @ head.T, t_lp, torch.ones(b, t))
    torch.testing.assert_close(torch.autograd.grad(ref, [hidden, head]), (gh, gw), **TOL)
