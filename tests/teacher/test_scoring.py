"""Teacher scoring (opcd.teacher.scoring.score_responses) against a manual per-sequence forward pass."""
import pytest
import torch

from opcd.chat import encode_answer, encode_prompt
from opcd.modeling import load_causal_lm
from opcd.teacher.scoring import score_responses


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.set_num_threads(1)
    return load_causal_lm(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def batch(tok):
    pairs = [("abc", "Reverse the string.", "cba"), ("hello", "", "ol"), ("xy", "Examples:\nab -> ba", "yxyxy"),
             ("q", "Sort the letters.", "")]
    prompts = [encode_prompt(tok, p, c) for p, c, _ in pairs]
    resps = [encode_answer(tok, a) for _, _, a in pairs]
    seqs = [p + r for p, r in zip(prompts, resps)]
    return prompts, resps, seqs, [len(r) for r in resps]


def _manual_logp(model, prompt, seq, temperature):
    """log_softmax(logits / T) [r, V] over the response positions of one sequence run alone."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0].double()
    return torch.log_softmax(logits[len(prompt) - 1: len(seq) - 1] / temperature, -1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_support_equals_manual_log_softmax(model, tok, batch, temperature):
    prompts, resps, seqs, lens = batch
    out = score_responses(model, seqs, lens, tok.pad_token_id, support="full", temperature=temperature)
    B, T, V = len(seqs), max(lens), len(tok)
    assert out["logprobs"].shape == (B, T, V) and out["token_logprobs"].shape == (B, T)
    # Full support: the last axis is the vocabulary itself, so no [B, T, V] id tensor is built or shipped.
    assert out["support_ids"].shape == (B, T, 0) and out["support_ids"].dtype == torch.long
    for b in range(B):
        ref = _manual_logp(model, prompts[b], seqs[b], temperature)
        torch.testing.assert_close(out["logprobs"][b, :lens[b]].double(), ref, atol=1e-5, rtol=1e-5)
        # Distributions: each row sums to one.
        torch.testing.assert_close(out["logprobs"][b, :lens[b]].exp().sum(-1),
                                   torch.ones(lens[b]), atol=1e-5, rtol=0)
        # token_logprobs: the log-prob of the actual response token.
        ref_tok = ref.gather(-1, torch.tensor(resps[b])[:, None])[:, 0]
        torch.testing.assert_close(out["token_logprobs"][b, :lens[b]].double(), ref_tok, atol=1e-5, rtol=1e-5)


def test_temperature_changes_distribution(model, tok, batch):
    _, _, seqs, lens = batch
    a = score_responses(model, seqs, lens, tok.pad_token_id, support="full", temperature=1.0)["logprobs"]
    b = score_responses(model, seqs, lens, tok.pad_token_id, support="full", temperature=0.7)["logprobs"]
    assert not torch.allclose(a[0, 0], b[0, 0])


def test_topk_support_is_true_topk_in_order(model, tok, batch):
    prompts, _, seqs, lens = batch
    k = 5
    out = score_responses(model, seqs, lens, tok.pad_token_id, support="topk", k=k)
    assert out["support_ids"].shape == (len(seqs), max(lens), k)
    for b in range(len(seqs)):
        ref = _manual_logp(model, prompts[b], seqs[b], 1.0)
        vals, ids = ref.topk(k, -1)
        assert torch.equal(out["support_ids"][b, :lens[b]], ids)
        torch.testing.assert_close(out["logprobs"][b, :lens[b]].double(), vals, atol=1e-5, rtol=1e-5)
        lp = out["logprobs"][b, :lens[b]]
        assert (lp[:, :-1] >= lp[:, 1:]).all()  # descending


def test_given_support_ids_are_gathered(model, tok, batch):
    prompts, _, seqs, lens = batch
    B, T, k = len(seqs), max(lens), 3
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (B, T, k), generator=g)
    out = score_responses(model, seqs, lens, tok.pad_token_id, support=ids, temperature=0.7)
    for b in range(B):
        ref = _manual_logp(model, prompts[b], seqs[b], 0.7)
        assert torch.equal(out["support_ids"][b, :lens[b]], ids[b, :lens[b]])
        torch.testing.assert_close(out["logprobs"][b, :lens[b]].double(), ref.gather(-1, ids[b, :lens[b]]),
                                   atol=1e-5, rtol=1e-5)


def test_micro_batching_is_identical(model, tok, batch):
    _, _, seqs, lens = batch
    for support in ("full", "topk"):
        ref = score_responses(model, seqs, lens, tok.pad_token_id, support=support, k=4)
        for mbs in (1, 3):
            out = score_responses(model, seqs, lens, tok.pad_token_id, support=support, k=4, micro_batch_size=mbs)
            for key in ("logprobs", "token_logprobs"):
                assert out[key].shape == ref[key].shape
                torch.testing.assert_close(out[key], ref[key], atol=1e-5, rtol=1e-5)
            valid = torch.tensor([[t < n for t in range(max(lens))] for n in lens])
            assert torch.equal(out["support_ids"][valid], ref["support_ids"][valid])
    ids = torch.randint(0, len(tok), (len(seqs), max(lens), 3), generator=torch.Generator().manual_seed(1))
    ref = score_responses(model, seqs, lens, tok.pad_token_id, support=ids)
    out = score_responses(model, seqs, lens, tok.pad_token_id, support=ids, micro_batch_size=1)
    torch.testing.assert_close(out["logprobs"], ref["logprobs"], atol=1e-5, rtol=1e-5)


def test_padded_positions_are_zero(model, tok, batch):
    _, _, seqs, lens = batch
    T = max(lens)
    pad = torch.tensor([[t >= n for t in range(T)] for n in lens])
    assert pad.any()
    for mbs in (64, 1):
        out = score_responses(model, seqs, lens, tok.pad_token_id, support="full", micro_batch_size=mbs)
        assert (out["logprobs"][pad] == 0).all()
        assert (out["token_logprobs"][pad] == 0).all()
        assert (out["logprobs"][~pad] < 0).all()


def test_unknown_support_raises(model, tok, batch):
    _, _, seqs, lens = batch
    with pytest.raises(ValueError, match="unknown support 'student'"):
        score_responses(model, seqs, lens, tok.pad_token_id, support="student")


# --------------------------------------------------------------------------- hidden states (teacher_transfer=hidden)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("mbs", [64, 1])
def test_hidden_support_ships_what_the_head_turns_into_the_full_log_probs(model, tok, batch, temperature, mbs):
    """``support="hidden"``: [B, T, d] final hidden states (the LM head's input) instead of [B, T, V];
    the head applied to them gives the ``"full"`` log-probs, and the token log-probs are the same."""
    _, _, seqs, lens = batch
    full = score_responses(model, seqs, lens, tok.pad_token_id, support="full", temperature=temperature)
    out = score_responses(model, seqs, lens, tok.pad_token_id, support="hidden", temperature=temperature,
                          micro_batch_size=mbs)
    B, T, d = len(seqs), max(lens), model.config.hidden_size
    assert out["hidden"].shape == (B, T, d) and out["hidden"].dtype == torch.float32
    assert out["logprobs"].shape == (B, T, 0) and out["support_ids"].shape == (B, T, 0)
    pad = torch.tensor([[t >= n for t in range(T)] for n in lens])
    assert (out["hidden"][pad] == 0).all() and (out["hidden"][~pad] != 0).any(-1).all()
    head = model.get_output_embeddings().weight
    lp = torch.log_softmax(out["hidden"] @ head.T / temperature, -1)
    torch.testing.assert_close(lp[~pad], full["logprobs"][~pad], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["token_logprobs"], full["token_logprobs"], atol=1e-5, rtol=1e-5)


def test_hidden_states_keep_the_teachers_dtype(tiny_model_dir, tok, batch):
    """A bf16 teacher ships d x 2 bytes per token: its hidden states as they are, not upcast."""
    _, _, seqs, lens = batch
    bf16 = load_causal_lm(tiny_model_dir, "bfloat16").eval()
    out = score_responses(bf16, seqs, lens, tok.pad_token_id, support="hidden")
    assert out["hidden"].dtype == torch.bfloat16 and out["token_logprobs"].dtype == torch.float32


def test_teacher_actor_ships_hidden_states_for_full_support_only(tiny_model_dir, tok, batch):
    from opcd.teacher.actor import TeacherActor

    _, _, seqs, lens = batch
    actor = TeacherActor(tiny_model_dir, "float32", "cpu", 1, 64, {}, transfer="hidden")
    out = actor.score(seqs, lens, "full", 4, 1.0)
    assert out["hidden"].shape[-1] == 64 and out["logprobs"].numel() == 0
    ids = torch.zeros(len(seqs), max(lens), 2, dtype=torch.long)
    assert "hidden" not in actor.score(seqs, lens, ids, 2, 1.0)  # the student's top-k: log-probs as before
    plain = TeacherActor(tiny_model_dir, "float32", "cpu", 1, 64, {})
    assert "hidden" not in plain.score(seqs, lens, "full", 4, 1.0)
