"""The full-vocabulary reverse KL with the teacher given as hidden states + LM head
(opcd.chunked_kl.chunked_reverse_kl_from_hidden): same value and gradients as today's loss on
[B, T, V] teacher log-probs, and memory flat in T."""
import pytest
import torch

from opcd import chunked_kl
from opcd import losses as L
from opcd.chat import encode_answer, encode_prompt
from opcd.modeling import load_causal_lm, response_logits
from opcd.models.toy.pretrain import build_model
from opcd.teacher.scoring import score_responses

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)
B, T, H, D, V = 3, 5, 6, 4, 11  # student width H, teacher width D: a cross-size pair
MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=DT)


def rand(*shape, seed, scale=1.0, grad=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT) * scale
    return x.requires_grad_(grad)


def grads(loss, leaves):
    return torch.autograd.grad(loss, leaves, retain_graph=True)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean"])
@pytest.mark.parametrize("tau", [1.0, 0.6])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 64])  # 8 valid rows: 3 does not divide them
def test_matches_full_reverse_kl_value_and_gradients(mode, tau, chunk_size):
    hs, ws = rand(B, T, H, seed=1, grad=True), rand(V, H, seed=2, grad=True)
    ht, wt = rand(B, T, D, seed=3, scale=2.0), rand(V, D, seed=4)
    ht[~MASK.bool()] = float("nan")  # masked rows are never read
    loss, m = L.chunked_reverse_kl_from_hidden(hs, ws, ht, wt, MASK, temperature=tau, chunk_size=chunk_size,
                                               aggregation=mode)
    ref, m_ref = L.full_reverse_kl(hs @ ws.T, torch.nan_to_num(ht) @ wt.T, MASK, temperature=tau, aggregation=mode)
    torch.testing.assert_close(loss, ref, **TOL)
    for a, b in zip(grads(loss, [hs, ws]), grads(ref, [hs, ws])):
        torch.testing.assert_close(a, b, **TOL)
    assert m["kl"] == pytest.approx(m_ref["kl"], rel=1e-10) and ref.item() > 0.1


def test_teacher_gets_no_gradient_and_bf16_hidden_states_are_upcast():
    hs, ws = rand(B, T, H, seed=5, grad=True), rand(V, H, seed=6, grad=True)
    ht = rand(B, T, D, seed=7).float().to(torch.bfloat16).requires_grad_(True)
    wt = rand(V, D, seed=8).float().requires_grad_(True)
    loss, _ = L.chunked_reverse_kl_from_hidden(hs, ws, ht, wt, MASK)
    assert torch.autograd.grad(loss, [ht, wt], allow_unused=True) == (None, None)
    ref, _ = L.full_reverse_kl(hs @ ws.T, ht.double() @ wt.double().T, MASK)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-7)  # the head in fp32, hidden states exact in bf16


def test_shape_mismatches_are_one_line_errors():
    hs, ws = rand(B, T, H, seed=1), rand(V, H, seed=2)
    with pytest.raises(ValueError, match=r"teacher hidden states \(3, 5, 3\) do not fit .* d=4"):
        L.chunked_reverse_kl_from_hidden(hs, ws, rand(B, T, D - 1, seed=3), rand(V, D, seed=4), MASK)
    with pytest.raises(ValueError, match="teacher head has 12 vocabulary rows, the student's 11"):
        L.chunked_reverse_kl_from_hidden(hs, ws, rand(B, T, D, seed=3), rand(V + 1, D, seed=4), MASK)


def test_teacher_logprobs_from_hidden_is_the_log_softmax_of_the_head():
    ht, wt = rand(B, T, D, seed=3), rand(V, D, seed=4)
    lp = L.teacher_logprobs_from_hidden(ht, wt, 0.7)
    assert lp.dtype == torch.float32 and lp.shape == (B, T, V)
    torch.testing.assert_close(lp.double(), torch.log_softmax(ht @ wt.T / 0.7, -1), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- against today's path, on real models
@pytest.fixture(scope="module")
def pair(tok, tiny_model_dir):
    """A tiny random student and a wider random teacher (d=32 vs 64), one response batch."""
    torch.manual_seed(1)
    student = load_causal_lm(tiny_model_dir)
    teacher = build_model(tok, hidden=32, layers=1, heads=2).eval()
    recs = [("abc", "Reverse the string.", "cba"), ("hello", "Reverse the string.", "ol"), ("xy", "", "yxyxy")]
    sp = [encode_prompt(tok, p) for p, _, _ in recs]
    cp = [encode_prompt(tok, p, c) for p, c, _ in recs]
    resps = [encode_answer(tok, a) for _, _, a in recs]
    return student, teacher, sp, cp, resps


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_equals_todays_full_vocabulary_loss_on_a_tiny_model(tok, pair, tau):
    """The teacher ships hidden states instead of [B, T, V] log-probs; the loss and its gradients
    w.r.t. the student's hidden states and head are today's (chunked_full_reverse_kl on log-probs), to
    float32 rounding (both sides compute in fp32; the float64 tests above are exact)."""
    student, teacher, sp, cp, resps = pair
    pad, lens = tok.pad_token_id, [len(r) for r in resps]
    ctx = [p + r for p, r in zip(cp, resps)]
    full = score_responses(teacher, ctx, lens, pad, support="full", temperature=tau)
    shipped = score_responses(teacher, ctx, lens, pad, support="hidden", temperature=tau)
    assert shipped["hidden"].shape == (3, max(lens), 32) and shipped["logprobs"].numel() == 0
    hs, mask = response_logits(student, [p + r for p, r in zip(sp, resps)], lens, pad, return_hidden=True)
    hs = hs.detach().requires_grad_(True)
    ws = student.get_output_embeddings().weight
    head_t = teacher.get_output_embeddings().weight.detach()
    new, _ = L.chunked_reverse_kl_from_hidden(hs, ws, shipped["hidden"], head_t, mask, temperature=tau, chunk_size=4)
    today, _ = L.chunked_full_reverse_kl(hs, ws, full["logprobs"], mask, temperature=tau, chunk_size=4)
    torch.testing.assert_close(new, today, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads(new, [hs, ws]), grads(today, [hs, ws])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert today.item() > 1e-3


# ----------------------------------------------------------------- memory
def test_keeps_no_vocab_sized_activations_and_recomputes_each_teacher_chunk_once(monkeypatch):
    """Nothing of size rows*V is saved for backward; the teacher's chunk is formed once per chunk in the
    forward and once in the backward (one head matmul per chunk, not per row block)."""
    b, t, v, h, d, chunk = 1, 48, 40, 6, 5, 4
    hs, ws = rand(b, t, h, seed=40, grad=True), rand(v, h, seed=41, grad=True)
    ht, wt = rand(b, t, d, seed=42), rand(v, d, seed=43)
    calls, saved = [], []
    real = chunked_kl._HiddenTeacher.__call__
    monkeypatch.setattr(chunked_kl._HiddenTeacher, "__call__",
                        lambda self, rows: calls.append(len(rows)) or real(self, rows))

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss, _ = L.chunked_reverse_kl_from_hidden(hs, ws, ht, wt, torch.ones(b, t), chunk_size=chunk)
    assert calls == [chunk] * (t // chunk) and max(saved) < 2 * chunk * v
    gh, gw = torch.autograd.grad(loss, [hs, ws])
    assert calls == [chunk] * (2 * t // chunk)
    ref, _ = L.full_reverse_kl(hs @ ws.T, ht @ wt.T, torch.ones(b, t))
    torch.testing.assert_close(torch.autograd.grad(ref, [hs, ws]), (gh, gw), **TOL)


def _peak_bytes(t: int, v: int, chunk: int) -> int:
    from benchmarks.common.memory import profile_peak

    h = d = 8
    torch.manual_seed(0)
    hs = torch.randn(1, t, h, requires_grad=True)
    ws = torch.randn(v, h, requires_grad=True)
    ht, wt, mask = torch.randn(1, t, d), torch.randn(v, d), torch.ones(1, t)

    def step():
        loss, _ = L.chunked_reverse_kl_from_hidden(hs, ws, ht, wt, mask, chunk_size=chunk)
        loss.backward()

    return profile_peak(step)[1]


def test_peak_memory_is_flat_in_T():
    """Peak extra memory (CPU allocator, profiler replay) at T = 128 and 512: the student's and the
    teacher's [chunk, V] buffers plus row-block temporaries, whatever T is -- never T x V."""
    v, chunk, row_block = 4096, 64, chunked_kl.ROW_BLOCK
    buffers, temporaries = 2 * chunk * v * 4, 3 * row_block * v * 4
    small, large = _peak_bytes(128, v, chunk), _peak_bytes(512, v, chunk)
    assert large < 1.05 * small, (small, large)  # 4x the positions, the same memory
    assert large < buffers + temporaries + 64 * 1024, (large, buffers, temporaries)
    assert large < 512 * v * 4 / 2  # under half of one [T, V] float32 tensor
